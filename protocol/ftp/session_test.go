package ftp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/protocol/ftp"
)

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func dialFake(t *testing.T, srv *fakeServer, opts ...ftp.Option) *ftp.Session {
	t.Helper()
	opts = append([]ftp.Option{ftp.WithCredentials("u", srv.password)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ftp.Dial(ctx, srv.addr(), opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func upload(t *testing.T, s protocol.Session, path string, offset int64, data []byte) {
	t.Helper()
	w, err := s.OpenWriter(context.Background(), path, offset)
	if err != nil {
		t.Fatalf("OpenWriter(%d): %v", offset, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got := w.Acked(); got != int64(len(data)) {
		t.Errorf("Acked = %d, want %d", got, len(data))
	}
	if err := w.Close(); err != nil {
		t.Fatalf("writer Close: %v", err)
	}
}

func TestUploadResumeDownload(t *testing.T) {
	srv := newFakeServer(t)
	s := dialFake(t, srv)
	data := randBytes(t, 300_000)
	upload(t, s, "f.bin", 0, data[:100_000])
	upload(t, s, "f.bin", 100_000, data[100_000:])
	if got, _ := srv.file("f.bin"); !bytes.Equal(got, data) {
		t.Fatalf("remote content differs (len %d)", len(got))
	}
	fi, err := s.Stat(context.Background(), "f.bin")
	if err != nil || fi.Size != int64(len(data)) || fi.ModTime.IsZero() {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	r, err := s.OpenReader(context.Background(), "f.bin", 123_456)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("reader Close: %v", err)
	}
	if !bytes.Equal(got, data[123_456:]) {
		t.Fatal("downloaded range differs")
	}
	// Reading at the very end yields an empty stream without RETR.
	r, err = s.OpenReader(context.Background(), "f.bin", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, r); n != 0 || err != nil {
		t.Fatalf("read at end: %d, %v", n, err)
	}
	_ = r.Close()
	// TYPE I precedes every RETR and STOR on the connection.
	typeI := false
	for _, c := range srv.commands() {
		switch {
		case c == "TYPE I":
			typeI = true
		case strings.HasPrefix(c, "RETR"), strings.HasPrefix(c, "STOR"):
			if !typeI {
				t.Fatalf("%s before TYPE I", c)
			}
		}
	}
}

func TestOffsetPastEnd(t *testing.T) {
	srv := newFakeServer(t)
	srv.setFile("f", []byte("hello"))
	s := dialFake(t, srv)
	_, err := s.OpenWriter(context.Background(), "f", 6)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Kind != nil {
		t.Fatalf("OpenWriter past end: %v", err)
	}
	for _, c := range srv.commands() {
		if strings.HasPrefix(c, "STOR") || strings.HasPrefix(c, "REST") {
			t.Fatalf("sent %q for an offset past the end", c)
		}
	}
	if _, err := s.OpenReader(context.Background(), "f", 6); !errors.As(err, &pe) || pe.Kind != nil {
		t.Fatalf("OpenReader past end: %v", err)
	}
	if _, err := s.Stat(context.Background(), "f"); err != nil {
		t.Fatalf("session unusable after refusals: %v", err)
	}
}

func TestReaderFromFile(t *testing.T) {
	srv := newFakeServer(t)
	s := dialFake(t, srv)
	data := randBytes(t, 1<<20)
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := s.OpenWriter(context.Background(), "up", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.(io.ReaderFrom); !ok {
		t.Fatal("writer does not implement io.ReaderFrom")
	}
	n, err := io.Copy(w, f)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	if w.Acked() != int64(len(data)) {
		t.Fatalf("Acked = %d", w.Acked())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.file("up"); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

func TestEarlyCloseLeavesSessionUsable(t *testing.T) {
	srv := newFakeServer(t)
	srv.setFile("big", randBytes(t, 8<<20))
	s := dialFake(t, srv)
	for i := 0; i < 3; i++ {
		r, err := s.OpenReader(context.Background(), "big", int64(i))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1000)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("early Close: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	if fi, err := s.Stat(context.Background(), "big"); err != nil || fi.Size != 8<<20 {
		t.Fatalf("Stat after early close = %+v, %v", fi, err)
	}
}

func TestShortStreamIsTransient(t *testing.T) {
	srv := newFakeServer(t, func(s *fakeServer) { s.killRetrAfter = 40_000 })
	srv.setFile("f", randBytes(t, 100_000))
	s := dialFake(t, srv)
	r, err := s.OpenReader(context.Background(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if err == nil {
		t.Fatalf("short stream (%d bytes) reported as complete", n)
	}
	if !errors.Is(err, protocol.ErrTransient) {
		t.Fatalf("err = %v, want ErrTransient", err)
	}
	if n != 40_000 {
		t.Errorf("read %d bytes, want 40000", n)
	}
}

func TestResumedStorRefused(t *testing.T) {
	srv := newFakeServer(t, func(s *fakeServer) { s.refuseRestStor = true })
	srv.setFile("f", []byte("0123456789"))
	s := dialFake(t, srv)
	_, err := s.OpenWriter(context.Background(), "f", 5)
	if !errors.Is(err, protocol.ErrResumeUnsupported) {
		t.Fatalf("err = %v, want ErrResumeUnsupported", err)
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != 451 {
		t.Fatalf("err = %#v, want Code 451", err)
	}
	// The session still works: restart from zero.
	upload(t, s, "f", 0, []byte("abc"))
}

func TestRestRefused(t *testing.T) {
	srv := newFakeServer(t, func(s *fakeServer) { s.refuseRest = 502 })
	srv.setFile("f", []byte("0123456789"))
	s := dialFake(t, srv)
	start := time.Now()
	defer func() {
		// A refused upload must not wait for the server to close a data
		// connection it never accepted.
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	}()
	if _, err := s.OpenReader(context.Background(), "f", 5); !errors.Is(err, protocol.ErrResumeUnsupported) {
		t.Fatalf("read: err = %v, want ErrResumeUnsupported", err)
	}
	if _, err := s.OpenWriter(context.Background(), "f", 5); !errors.Is(err, protocol.ErrResumeUnsupported) {
		t.Fatalf("write: err = %v, want ErrResumeUnsupported", err)
	}
}

func TestStatRemoveRename(t *testing.T) {
	srv := newFakeServer(t)
	srv.setFile("a", []byte("x"))
	s := dialFake(t, srv)
	ctx := context.Background()
	if _, err := s.Stat(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat missing: %v", err)
	}
	if fi, err := s.Stat(ctx, "dir"); err != nil || !fi.IsDir {
		t.Fatalf("Stat dir = %+v, %v", fi, err)
	}
	if _, err := s.Stat(ctx, "a"); err != nil {
		t.Fatalf("Stat after CWD probe: %v", err)
	}
	if err := s.Rename(ctx, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename(ctx, "a", "c"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Rename missing: %v", err)
	}
	if err := s.Remove(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove missing: %v", err)
	}
	if _, err := s.OpenReader(ctx, "missing", 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenReader missing: %v", err)
	}
}

func TestInvalidPathsSendNothing(t *testing.T) {
	srv := newFakeServer(t)
	s := dialFake(t, srv)
	before := len(srv.commands())
	ctx := context.Background()
	bad := "x\r\nDELE y"
	if _, err := s.Stat(ctx, bad); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatal(err)
	}
	if _, err := s.OpenReader(ctx, bad, 0); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatal(err)
	}
	if _, err := s.OpenWriter(ctx, "a\x00", 0); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatal(err)
	}
	if err := s.Rename(ctx, "a", "b\n"); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, ""); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatal(err)
	}
	if got := len(srv.commands()); got != before {
		t.Fatalf("%d commands sent for invalid paths", got-before)
	}
}

func TestWrongPasswordAndLogRedaction(t *testing.T) {
	srv := newFakeServer(t)
	var logBuf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const secret = "s3cret-Pa55"
	_, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithCredentials("u", secret), ftp.WithLogger(logger))
	if !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("err = %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatal("password in error")
	}
	if strings.Contains(logBuf.String(), secret) {
		t.Fatal("password in log")
	}
	if !strings.Contains(logBuf.String(), "PASS ****") {
		t.Fatalf("log lacks the masked PASS:\n%s", logBuf.String())
	}
	n := 0
	for _, c := range srv.commands() {
		if strings.HasPrefix(c, "PASS") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d login attempts, want 1", n)
	}
	// Good password, logged: still no secret.
	logBuf.Reset()
	srv = newFakeServer(t, func(s *fakeServer) { s.password = secret })
	s, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithCredentials("u", secret), ftp.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if strings.Contains(logBuf.String(), secret) {
		t.Fatal("password in log")
	}
}

func TestPASVHostIgnored(t *testing.T) {
	// No EPSV forces PASV, whose reply names 10.9.9.9.
	srv := newFakeServer(t, func(s *fakeServer) { s.noEPSV = true })
	srv.setFile("f", []byte("via pasv"))
	for _, opts := range [][]ftp.Option{nil, {ftp.WithDisableEPSV()}} {
		s := dialFake(t, srv, opts...)
		r, err := s.OpenReader(context.Background(), "f", 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || string(got) != "via pasv" {
			t.Fatalf("got %q, %v", got, err)
		}
		_ = r.Close()
		ctrl, _ := s.Conns()
		if ctrl == nil {
			t.Fatal("no control conn")
		}
	}
}

func TestCancelDuringRead(t *testing.T) {
	srv := newFakeServer(t, func(s *fakeServer) { s.retrLoop = true })
	srv.setFile("f", randBytes(t, 1<<20))
	s := dialFake(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := s.OpenReader(ctx, "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The first Read after cancel reports it, whatever the AfterFunc that
	// closes the connections has done yet.
	if _, err := r.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel: %v, want context.Canceled", err)
	}
	if err := r.Close(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close after cancel: %v, want context.Canceled", err)
	}
	if _, err := s.Stat(context.Background(), "f"); err == nil {
		t.Fatal("session usable after cancellation")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCancelDuringWriteNoLeak(t *testing.T) {
	srv := newFakeServer(t)
	before := snapshotGoroutines()
	s := dialFake(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.OpenWriter(ctx, "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Write([]byte("more")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v", err)
	}
	if err := w.Close(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close after cancel: %v", err)
	}
	if err := w.Close(); !errors.Is(err, context.Canceled) {
		t.Fatalf("second Close after cancel: %v", err)
	}
	if _, err := s.Stat(context.Background(), "f"); err == nil {
		t.Fatal("session usable after cancellation")
	}
	_ = s.Close()
	// Close waited for the writer goroutine and the context's AfterFunc;
	// the fake server's session ends once its connections are closed.
	srv.waitSessions(t)
	checkNoLeak(t, before)
}

// TestCloseAfterCancelDeterministic closes readers and writers whose context
// was cancelled before Close while the Session's AfterFunc has not run (and
// here never runs): Close alone must turn the cancellation into the
// verdict, abort the transfer and leave the session unusable.
func TestCloseAfterCancelDeterministic(t *testing.T) {
	cause := errors.New("caller gave up")
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s *ftp.Session, ctx context.Context, cancel func()) error
	}{
		{"writer after Write", func(t *testing.T, s *ftp.Session, ctx context.Context, cancel func()) error {
			w, err := s.OpenWriter(ctx, "up", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("some bytes")); err != nil {
				t.Fatal(err)
			}
			cancel()
			return w.Close()
		}},
		{"writer without Write", func(t *testing.T, s *ftp.Session, ctx context.Context, cancel func()) error {
			w, err := s.OpenWriter(ctx, "up", 0)
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			return w.Close()
		}},
		{"reader mid-stream", func(t *testing.T, s *ftp.Session, ctx context.Context, cancel func()) error {
			r, err := s.OpenReader(ctx, "f", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			cancel()
			if _, err := r.Read(make([]byte, 10)); !errors.Is(err, cause) {
				t.Errorf("Read after cancel: %v, want %v", err, cause)
			}
			return r.Close()
		}},
		{"reader not read", func(t *testing.T, s *ftp.Session, ctx context.Context, cancel func()) error {
			r, err := s.OpenReader(ctx, "f", 0)
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			return r.Close()
		}},
		{"reader at EOF", func(t *testing.T, s *ftp.Session, ctx context.Context, cancel func()) error {
			r, err := s.OpenReader(ctx, "f", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(r); err != nil {
				t.Fatal(err)
			}
			cancel()
			return r.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.setFile("f", randBytes(t, 1<<10))
			before := snapshotGoroutines()
			s := dialFake(t, srv)
			parent, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			err := tc.run(t, s, errOnlyCtx{parent}, func() { cancel(cause) })
			if !errors.Is(err, cause) {
				t.Fatalf("Close after cancel: %v, want %v", err, cause)
			}
			if _, err := s.Stat(context.Background(), "f"); err == nil {
				t.Fatal("session usable after cancellation")
			}
			_ = s.Close()
			srv.waitSessions(t)
			checkNoLeak(t, before)
		})
	}
}

func TestSessionCloseAbortsOpenWriter(t *testing.T) {
	srv := newFakeServer(t)
	s := dialFake(t, srv)
	w, err := s.OpenWriter(context.Background(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung with an open writer")
	}
	if err := w.Close(); err == nil {
		t.Fatal("writer Close succeeded on a closed session")
	}
}

func TestBusy(t *testing.T) {
	srv := newFakeServer(t)
	srv.setFile("f", []byte("abc"))
	s := dialFake(t, srv)
	r, err := s.OpenReader(context.Background(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(context.Background(), "f"); err == nil {
		t.Fatal("Stat allowed while a reader is open")
	}
	_, _ = io.ReadAll(r)
	_ = r.Close()
	if _, err := s.Stat(context.Background(), "f"); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, opt := range map[string]ftp.Option{
		"empty user":    ftp.WithCredentials("", "x"),
		"CRLF password": ftp.WithCredentials("u", "a\r\nDELE x"),
		"zero timeout":  ftp.WithDialTimeout(0),
		"negative shut": ftp.WithShutTimeout(-1),
	} {
		if _, err := ftp.Dial(context.Background(), "127.0.0.1:1", opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ftp.Dial(context.Background(), "127.0.0.1:1", ftp.WithExplicitTLS(nil), ftp.WithImplicitTLS(nil)); err == nil {
		t.Error("both TLS modes accepted")
	}
}

func TestDialer(t *testing.T) {
	srv := newFakeServer(t)
	d := ftp.Dialer(srv.addr(), ftp.WithCredentials("u", "wrong"))
	s, err := d(context.Background())
	if s != nil || !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("Dialer = %v, %v", s, err)
	}
}

func TestHashWholeFileWithHASH(t *testing.T) {
	srv := newFakeServer(t)
	data := randBytes(t, 10_000)
	srv.setFile("f", data)
	s := dialFake(t, srv)
	if got := s.HashAlgorithms(); len(got) != 2 || got[0] != "sha256" || got[1] != "md5" {
		t.Fatalf("HashAlgorithms = %v", got)
	}
	sum, err := s.Hash(context.Background(), "f", "sha256", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(sum, want[:]) {
		t.Fatalf("Hash = %x", sum)
	}
	if _, err := s.Hash(context.Background(), "f", "sha256", 5, -1); !errors.Is(err, protocol.ErrUnsupported) {
		t.Fatalf("range with HASH only: %v", err)
	}
	if _, err := s.Hash(context.Background(), "f", "sha1", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
		t.Fatalf("sha1: %v", err)
	}
	if _, err := s.Hash(context.Background(), "missing", "sha256", 0, -1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

// jlaffaye leaves the shut-timeout deadline on the control connection after
// a transfer; the session must clear it, or every command after the
// deadline would time out.
func TestShutDeadlineCleared(t *testing.T) {
	srv := newFakeServer(t)
	srv.setFile("f", []byte("data"))
	s := dialFake(t, srv, ftp.WithShutTimeout(50*time.Millisecond))
	r, err := s.OpenReader(context.Background(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	upload(t, s, "g", 0, []byte("more"))
	time.Sleep(150 * time.Millisecond) // let the old deadline pass
	if _, err := s.Stat(context.Background(), "f"); err != nil {
		t.Fatalf("Stat after the shut deadline: %v", err)
	}
}

// selfSigned returns a server TLS config for 127.0.0.1 and a client config
// trusting it (only RootCAs: Dial adds ServerName and the session cache).
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake ftp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return server, &tls.Config{RootCAs: pool}
}

func TestImplicitTLS(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	srv := newFakeServer(t, func(s *fakeServer) { s.tlsConfig = serverCfg })
	s := dialFake(t, srv, ftp.WithImplicitTLS(clientCfg))
	data := randBytes(t, 2<<20)
	upload(t, s, "f", 0, data[:1<<20])
	upload(t, s, "f", 1<<20, data[1<<20:])
	upload(t, s, "empty", 0, nil)
	if got, _ := srv.file("f"); !bytes.Equal(got, data) {
		t.Fatal("remote content differs")
	}
	r, err := s.OpenReader(context.Background(), "f", 100)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data[100:]) {
		t.Fatalf("download: %d bytes, %v", len(got), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cmds := strings.Join(srv.commands(), "\n")
	if !strings.Contains(cmds, "PBSZ 0") || !strings.Contains(cmds, "PROT P") {
		t.Fatalf("no PBSZ/PROT:\n%s", cmds)
	}

	// A certificate that does not verify is ErrHostKey.
	_, err = ftp.Dial(context.Background(), srv.addr(), ftp.WithCredentials("u", srv.password),
		ftp.WithImplicitTLS(&tls.Config{}))
	if !errors.Is(err, protocol.ErrHostKey) {
		t.Fatalf("untrusted certificate: %v", err)
	}
}
