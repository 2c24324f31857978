package sftp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func dial(t *testing.T, ts *testServer, opts ...hsftp.Option) *hsftp.Session {
	t.Helper()
	base := []hsftp.Option{hsftp.WithUser(testUser), hsftp.WithPassword(testPassword), hsftp.WithKnownHostsFile(ts.knownHosts)}
	s, err := hsftp.Dial(context.Background(), ts.addr, append(base, opts...)...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkNoLeaks fails when goroutines of this package or pkg/sftp's client
// are still running shortly after the test's sessions closed.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "haul/protocol/sftp.(*") || strings.Contains(g, "pkg/sftp.(*clientConn).recv") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLoginPasswordAndKey(t *testing.T) {
	ts := newTestServer(t, nil)
	s := dial(t, ts)
	if _, err := s.Stat(context.Background(), "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat(missing) = %v, want fs.ErrNotExist", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Stat(context.Background(), "x"); err == nil {
		t.Fatal("Stat after Close succeeded")
	}

	k, err := hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser),
		hsftp.WithSigner(ts.clientKey), hsftp.WithKnownHostsFile(ts.knownHosts))
	if err != nil {
		t.Fatalf("key Dial: %v", err)
	}
	if _, err := k.Stat(context.Background(), "."); err != nil {
		t.Fatalf("Stat(.): %v", err)
	}
	_ = k.Close()
	checkNoLeaks(t)
}

func TestHostKeyMismatch(t *testing.T) {
	ts := newTestServer(t, nil)
	other := newSigner(t)
	kh := ts.writeKnownHosts(other.PublicKey())
	_, err := hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser),
		hsftp.WithPassword(testPassword), hsftp.WithKnownHostsFile(kh))
	if !errors.Is(err, protocol.ErrHostKey) {
		t.Fatalf("err = %v, want ErrHostKey", err)
	}
	var he *hsftp.HostKeyError
	if !errors.As(err, &he) {
		t.Fatalf("err = %v, want a *HostKeyError", err)
	}
	msg := err.Error()
	for _, fp := range []string{ssh.FingerprintSHA256(other.PublicKey()), ssh.FingerprintSHA256(ts.hostKey.PublicKey())} {
		if !strings.Contains(msg, fp) {
			t.Errorf("message %q lacks fingerprint %s", msg, fp)
		}
	}
	if errors.Is(err, protocol.ErrTransient) || errors.Is(err, protocol.ErrAuth) {
		t.Errorf("err %v has a second kind", err)
	}
	if n := ts.authAttempts.Load(); n != 0 {
		t.Errorf("%d authentication attempts after a host key mismatch", n)
	}

	// Unknown host: an empty known_hosts file.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser),
		hsftp.WithPassword(testPassword), hsftp.WithKnownHostsFile(empty))
	if !errors.Is(err, protocol.ErrHostKey) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(ts.hostKey.PublicKey())) {
		t.Fatalf("unknown host: err = %v", err)
	}
	// Explicit opt-in.
	s, err := hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser),
		hsftp.WithPassword(testPassword), hsftp.WithInsecureIgnoreHostKey())
	if err != nil {
		t.Fatalf("insecure Dial: %v", err)
	}
	_ = s.Close()
	checkNoLeaks(t)
}

func TestWrongPassword(t *testing.T) {
	ts := newTestServer(t, nil)
	_, err := hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser),
		hsftp.WithPassword("wrong"), hsftp.WithKnownHostsFile(ts.knownHosts))
	if !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("err = %v, want ErrAuth", err)
	}
	if protocol.IsRetryable(err) {
		t.Fatalf("auth error %v is retryable", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error %q shows the password", err)
	}
	if n := ts.authAttempts.Load(); n != 1 {
		t.Fatalf("%d password attempts, want 1", n)
	}
	checkNoLeaks(t)
}

func TestDialRefusedIsTransient(t *testing.T) {
	ts := newTestServer(t, nil)
	addr := ts.addr
	ts.close()
	_, err := hsftp.Dial(context.Background(), addr, hsftp.WithUser(testUser),
		hsftp.WithPassword(testPassword), hsftp.WithKnownHostsFile(ts.knownHosts))
	if !errors.Is(err, protocol.ErrTransient) {
		t.Fatalf("err = %v, want ErrTransient", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, opt := range map[string]hsftp.Option{
		"concurrency": hsftp.WithConcurrency(0),
		"packet":      hsftp.WithPacketSize(10),
		"keepalive":   hsftp.WithKeepAlive(-time.Second),
		"timeout":     hsftp.WithDialTimeout(0),
		"user":        hsftp.WithUser(""),
		"key":         hsftp.WithPrivateKeyFile(filepath.Join(t.TempDir(), "none")),
	} {
		if _, err := hsftp.Dial(context.Background(), "127.0.0.1:1", hsftp.WithPassword("x"),
			hsftp.WithInsecureIgnoreHostKey(), opt); err == nil {
			t.Errorf("%s: Dial accepted an invalid option", name)
		}
	}
	if _, err := hsftp.Dial(context.Background(), "127.0.0.1:1", hsftp.WithUser("u"),
		hsftp.WithInsecureIgnoreHostKey()); err == nil {
		t.Error("Dial without an authentication method succeeded")
	}
}

func TestInvalidPath(t *testing.T) {
	ts := newTestServer(t, nil)
	s := dial(t, ts)
	ctx := context.Background()
	for _, p := range []string{"", "a\nb", "a\rb", "a\x00b"} {
		if _, err := s.Stat(ctx, p); !errors.Is(err, protocol.ErrInvalidPath) {
			t.Errorf("Stat(%q) = %v", p, err)
		}
		if _, err := s.OpenWriter(ctx, p, 0); !errors.Is(err, protocol.ErrInvalidPath) {
			t.Errorf("OpenWriter(%q) = %v", p, err)
		}
		if _, err := s.OpenReader(ctx, p, 0); !errors.Is(err, protocol.ErrInvalidPath) {
			t.Errorf("OpenReader(%q) = %v", p, err)
		}
		if err := s.Rename(ctx, "ok", p); !errors.Is(err, protocol.ErrInvalidPath) {
			t.Errorf("Rename(ok, %q) = %v", p, err)
		}
	}
}

func upload(t *testing.T, s *hsftp.Session, path string, offset int64, data []byte) protocol.Writer {
	t.Helper()
	w, err := s.OpenWriter(context.Background(), path, offset)
	if err != nil {
		t.Fatalf("OpenWriter(%s, %d): %v", path, offset, err)
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		t.Fatalf("copy: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("writer Close: %v", err)
	}
	if got := w.Acked(); got != int64(len(data)) {
		t.Fatalf("Acked = %d, want %d", got, len(data))
	}
	return w
}

func TestUploadResumeDownload(t *testing.T) {
	ts := newTestServer(t, nil)
	s := dial(t, ts, hsftp.WithConcurrency(16))
	ctx := context.Background()
	data := randomBytes(t, 5<<20+123)

	// A first attempt that left a partial file with a stale tail.
	stale := append(bytes.Clone(data[:3<<20]), randomBytes(t, 1<<20)...)
	upload(t, s, "f.bin", 0, stale)
	// Resume at 3 MiB: the stale tail must go.
	upload(t, s, "f.bin", 3<<20, data[3<<20:])
	got, err := os.ReadFile(filepath.Join(ts.dir, "f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("remote differs: %d bytes, want %d", len(got), len(data))
	}
	// Write (not ReadFrom) path, small odd writes.
	w, err := s.OpenWriter(ctx, "g.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 100_001)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(ts.dir, "g.bin")); !bytes.Equal(got, data) {
		t.Fatal("g.bin differs")
	}

	fi, err := s.Stat(ctx, "f.bin")
	if err != nil || fi.Size != int64(len(data)) || fi.IsDir {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}

	// Download at an offset, through WriterTo (io.Copy) and through Read.
	const off = 1<<20 + 7
	r, err := s.OpenReader(ctx, "f.bin", off)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(io.WriterTo); !ok {
		t.Fatal("reader does not implement io.WriterTo")
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatalf("download: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data[off:]) {
		t.Fatal("download (WriteTo) differs")
	}
	r, err = s.OpenReader(ctx, "f.bin", off)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(struct{ io.Reader }{r})
	if err != nil || !bytes.Equal(all, data[off:]) {
		t.Fatalf("download (Read): %d bytes, %v", len(all), err)
	}
	_ = r.Close()
	// Offset past the end.
	if _, err := s.OpenReader(ctx, "f.bin", int64(len(data))+1); err == nil {
		t.Fatal("OpenReader past the end succeeded")
	}
	if _, err := s.OpenWriter(ctx, "f.bin", int64(len(data))+1); err == nil {
		t.Fatal("OpenWriter past the end succeeded")
	}

	// Truncate, Rename over an existing file, Remove, FreeSpace.
	if err := s.Truncate(ctx, "g.bin", 10); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename(ctx, "g.bin", "f.bin"); err != nil {
		t.Fatal(err)
	}
	if fi, err := s.Stat(ctx, "f.bin"); err != nil || fi.Size != 10 {
		t.Fatalf("after rename: %+v %v", fi, err)
	}
	if err := s.Remove(ctx, "f.bin"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "f.bin"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Remove = %v", err)
	}
	if _, err := s.OpenReader(ctx, "f.bin", 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenReader(missing) = %v", err)
	}
	free, err := s.FreeSpace(ctx, ".")
	if err != nil || free <= 0 {
		t.Fatalf("FreeSpace = %d, %v", free, err)
	}
	_ = s.Close()
	checkNoLeaks(t)
}

func TestAckedAfterFailureAndNoAppend(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts, hsftp.WithConcurrency(8))
	data := randomBytes(t, 4<<20)
	const failAt = 1<<20 + 100 // inside the request [1 MiB, 1 MiB + 32 KiB)
	ffs.setFail(failAt, errors.New("injected failure"))

	w, err := s.OpenWriter(context.Background(), "/f", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, cerr := io.Copy(w, bytes.NewReader(data))
	err = w.Close()
	if cerr == nil && err == nil {
		t.Fatal("upload succeeded despite the injected failure")
	}
	if err == nil {
		err = cerr
	}
	if errors.Is(err, protocol.ErrNoSpace) || protocol.IsRetryable(err) {
		t.Fatalf("generic failure with plenty of space classified as %v", err)
	}
	if got := w.Acked(); got != 1<<20 {
		t.Fatalf("Acked = %d, want %d (contiguous mark before the failed request)", got, 1<<20)
	}
	fi, err := s.Stat(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("remote size after failure %d, acked %d", fi.Size, w.Acked())

	// Resume at the contiguous mark: OpenWriter truncates there.
	ffs.setFail(-1, nil)
	upload(t, s, "/f", w.Acked(), data[w.Acked():])
	r, err := s.OpenReader(context.Background(), "/f", 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after resume: %d bytes, %v; want %d identical", len(got), err, len(data))
	}

	ffs.mu.Lock()
	defer ffs.mu.Unlock()
	if len(ffs.writeFlags) != 2 {
		t.Fatalf("%d opens for writing, want 2", len(ffs.writeFlags))
	}
	for i, fl := range ffs.writeFlags {
		if fl.Append {
			t.Errorf("open %d used SSH_FXF_APPEND", i)
		}
		if fl.Trunc != (i == 0) {
			t.Errorf("open %d: Trunc = %v", i, fl.Trunc)
		}
	}
}

func TestNoSpaceByStatVFS(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts)
	ffs.setFail(200_000, syscall.ENOSPC) // pkg/sftp answers SSH_FX_FAILURE, like OpenSSH
	ffs.mu.Lock()
	ffs.freeBlocks = 3
	ffs.mu.Unlock()

	w, err := s.OpenWriter(context.Background(), "/full", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(w, bytes.NewReader(randomBytes(t, 1<<20)))
	err = w.Close()
	if !errors.Is(err, protocol.ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != 4 || pe.Op != "write" {
		t.Fatalf("err = %#v", err)
	}
	if free, err := s.FreeSpace(context.Background(), "/"); err != nil || free != 3*4096 {
		t.Fatalf("FreeSpace = %d, %v", free, err)
	}
}

func TestShortStream(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts)
	upload(t, s, "/f", 0, randomBytes(t, 1<<20))
	ffs.mu.Lock()
	ffs.readLimit = 300_000 // the file "shrinks" under the reader
	ffs.mu.Unlock()
	for _, viaWriterTo := range []bool{true, false} {
		r, err := s.OpenReader(context.Background(), "/f", 1000)
		if err != nil {
			t.Fatal(err)
		}
		var src io.Reader = r
		if !viaWriterTo {
			src = struct{ io.Reader }{r}
		}
		n, err := io.Copy(io.Discard, src)
		_ = r.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) || !protocol.IsRetryable(err) {
			t.Fatalf("WriterTo=%v: %d bytes, err = %v; want unexpected EOF, transient", viaWriterTo, n, err)
		}
	}
}

func TestCancelDuringRead(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts)
	upload(t, s, "/f", 0, randomBytes(t, 4<<20))
	gate := make(chan struct{})
	defer close(gate)
	ffs.mu.Lock()
	ffs.readGate, ffs.readBlock = gate, 2<<20 // the server stalls after 2 MiB
	ffs.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	r, err := s.OpenReader(ctx, "/f", 0)
	if err != nil {
		t.Fatal(err)
	}
	pw := &progressWriter{reached: make(chan struct{}), at: 1 << 20}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(pw, r)
		done <- err
	}()
	<-pw.reached
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || protocol.IsRetryable(err) {
			t.Fatalf("err = %v, want context.Canceled, not retryable", err)
		}
	case <-time.After(time.Second):
		t.Fatal("read did not return within a second of cancel")
	}
	t.Logf("returned %v after cancel", time.Since(start))
	_ = r.Close()
	if _, err := s.Stat(context.Background(), "/f"); err == nil {
		t.Fatal("session still usable after cancellation")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after cancel: %v", err)
	}
	checkNoLeaks(t)
}

type progressWriter struct {
	n       int64
	at      int64
	reached chan struct{}
}

func (p *progressWriter) Write(b []byte) (int, error) {
	before := p.n
	p.n += int64(len(b))
	if before < p.at && p.n >= p.at {
		close(p.reached)
	}
	return len(b), nil
}

func TestKeepAliveClosesDeadConnection(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts, hsftp.WithKeepAlive(50*time.Millisecond))
	upload(t, s, "/f", 0, randomBytes(t, 1<<20))
	gate := make(chan struct{})
	defer close(gate)
	ffs.mu.Lock()
	ffs.readGate, ffs.readBlock = gate, 0 // every read hangs
	ffs.mu.Unlock()
	ts.ignoreGlobal.Store(true) // and keepalives go unanswered

	r, err := s.OpenReader(context.Background(), "/f", 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		done <- err
	}()
	select {
	case err := <-done:
		if !protocol.IsRetryable(err) {
			t.Fatalf("err = %v, want transient", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocked read not ended by the keepalive")
	}
	_ = r.Close()
	_ = s.Close()
	checkNoLeaks(t)
}

func TestCancelledContextBeforeCall(t *testing.T) {
	ts := newTestServer(t, nil)
	s := dial(t, ts)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Stat(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stat = %v", err)
	}
	if _, err := hsftp.Dial(ctx, ts.addr, hsftp.WithUser(testUser), hsftp.WithPassword(testPassword),
		hsftp.WithKnownHostsFile(ts.knownHosts)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v", err)
	}
}

func TestAgentLogin(t *testing.T) {
	ts := newTestServer(t, nil)
	kr := agent.NewKeyring()
	priv := ts.clientKeyPriv
	if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = agent.ServeAgent(kr, c)
			_ = c.Close()
		}
	}()
	defer func() { _ = ln.Close(); <-done }()
	t.Setenv("SSH_AUTH_SOCK", sock)
	s, err := hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser), hsftp.WithAgent(),
		hsftp.WithKnownHostsFile(ts.knownHosts))
	if err != nil {
		t.Fatalf("agent Dial: %v", err)
	}
	_ = s.Close()
}
