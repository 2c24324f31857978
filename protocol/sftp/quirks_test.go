package sftp_test

// Servers that lack a feature or misbehave in one way, each faked in
// process, each with a faulted transfer up and down through the engine
// (github.com/openhaul/haul/resume, which does not import this package).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
	"github.com/openhaul/haul/resume"
	"golang.org/x/crypto/ssh"
)

// logBuffer collects a session's log records.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// baseOpts are the options of dial.
func baseOpts(ts *testServer) []hsftp.Option {
	return []hsftp.Option{hsftp.WithUser(testUser), hsftp.WithPassword(testPassword), hsftp.WithKnownHostsFile(ts.knownHosts)}
}

// engineConfig retries at once.
func engineConfig() resume.Config {
	return resume.Config{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, StallTimeout: 20 * time.Second}
}

// restarts collects the reasons of an engine's restarts.
type restarts struct {
	mu      sync.Mutex
	reasons []string
}

func (r *restarts) config() resume.Config {
	cfg := engineConfig()
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventRestart {
			r.mu.Lock()
			r.reasons = append(r.reasons, e.Reason)
			r.mu.Unlock()
		}
	}
	return cfg
}

func (r *restarts) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.reasons, "; ")
}

// lastRestarts holds the restart reasons of the last engineUpload.
var lastRestarts *restarts

// engineUpload uploads data to remote through the engine, the server's
// connection cut once after cut bytes, and checks the upload succeeded.
// lastRestarts says why it restarted, if it did.
func engineUpload(t *testing.T, ts *testServer, remote string, data []byte, cut int64, opts ...hsftp.Option) resume.Result {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cuts := ts.cuts.Load()
	ts.armCut(cut, 0)
	defer ts.armCut(0, 0)
	lastRestarts = &restarts{}
	res, err := resume.Upload(context.Background(), hsftp.Dialer(ts.addr, opts...), f, remote, lastRestarts.config())
	if err != nil {
		t.Fatalf("upload through the engine: %v (result %+v)", err, res)
	}
	if cut > 0 && ts.cuts.Load() == cuts {
		t.Fatal("the connection was not cut: no fault")
	}
	if res.Attempts < 2 && cut > 0 {
		t.Fatalf("upload: %d attempts after a cut", res.Attempts)
	}
	return res
}

// engineDownload downloads remote through the engine, the connection cut
// once after cut bytes sent, and returns what arrived.
func engineDownload(t *testing.T, ts *testServer, remote string, cut int64, opts ...hsftp.Option) ([]byte, resume.Result) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "dst.bin")
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cuts := ts.cuts.Load()
	ts.armCut(0, cut)
	defer ts.armCut(0, 0)
	res, err := resume.Download(context.Background(), hsftp.Dialer(ts.addr, opts...), remote, f, engineConfig())
	if err != nil {
		t.Fatalf("download through the engine: %v (result %+v)", err, res)
	}
	if cut > 0 && (ts.cuts.Load() == cuts || res.Attempts < 2) {
		t.Fatalf("no fault: %d cuts, %d attempts", ts.cuts.Load()-cuts, res.Attempts)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return got, res
}

// remoteBytes reads path over a new session.
func remoteBytes(t *testing.T, ts *testServer, path string, opts ...hsftp.Option) []byte {
	t.Helper()
	s, err := hsftp.Dial(context.Background(), ts.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return readAll(t, s, path, 0, 0)
}

func writeAll(s *hsftp.Session, ranged bool, path string, off int64, data []byte) error {
	open := s.OpenWriter
	if ranged {
		open = s.OpenRangeWriter
	}
	w, err := open(context.Background(), path, off)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, bytes.NewReader(data))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil && w.Acked() != int64(len(data)) {
		err = io.ErrShortWrite
	}
	return err
}

// A server that takes writes only in offset order, like one streaming
// uploads into objects: the writers' requests reach it in order, many at
// once, and it never refuses one.
func TestWritesInOrderOnTheWire(t *testing.T) {
	ffs := newFaultFS()
	ffs.wireOrder = true
	ts := newTestServer(t, ffs.handlers())
	ts.wrapSFTP = ffs.sniff
	var logs logBuffer
	opts := append(baseOpts(ts), hsftp.WithConcurrency(16), hsftp.WithPacketSize(32<<10), hsftp.WithLogger(logs.logger()))
	s, err := hsftp.Dial(context.Background(), ts.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := randomBytes(t, 8<<20+321)
	for _, ranged := range []bool{false, true} {
		ffs.resetCounts()
		path := "/plain.bin"
		if ranged {
			path = "/ranged.bin"
		}
		if err := writeAll(s, ranged, path, 0, data); err != nil {
			t.Fatalf("ranged %v: %v", ranged, err)
		}
		inflight, outOfOrder, rejected, writes := ffs.counts()
		t.Logf("ranged %v: %d writes, at most %d in flight, %d out of order, %d refused", ranged, writes, inflight, outOfOrder, rejected)
		if outOfOrder != 0 || rejected != 0 {
			t.Fatalf("ranged %v: %d writes out of order on the wire, %d refused", ranged, outOfOrder, rejected)
		}
		if inflight < 4 {
			t.Fatalf("ranged %v: at most %d writes in flight: not pipelined", ranged, inflight)
		}
		if got := readAll(t, s, path, 0, 0); !bytes.Equal(got, data) {
			t.Fatalf("ranged %v: read back %d bytes, want %d identical", ranged, len(got), len(data))
		}
	}
	if strings.Contains(logs.String(), "one request at a time") {
		t.Fatal("fell back to one request at a time on a server that takes ordered pipelined writes")
	}
	_ = s.Close()

	// Faulted, through the engine, both ways.
	ffs.resetCounts()
	res := engineUpload(t, ts, "/up.bin", data, 3<<20, opts...)
	if _, outOfOrder, rejected, _ := ffs.counts(); outOfOrder != 0 || rejected != 0 {
		t.Fatalf("engine upload: %d writes out of order, %d refused", outOfOrder, rejected)
	}
	if !bytes.Equal(remoteBytes(t, ts, "/up.bin", opts...), data) {
		t.Fatal("engine upload: remote file differs")
	}
	t.Logf("upload: %+v", res)
	got, res := engineDownload(t, ts, "/up.bin", 3<<20, opts...)
	if !bytes.Equal(got, data) {
		t.Fatal("engine download: local file differs")
	}
	t.Logf("download: %+v", res)
	checkNoLeaks(t)
}

// A server that refuses a write arriving while another runs (and takes
// them only in order): the writer sends the refused writes again one at a
// time, and the session keeps writing that way.
func TestSequentialFallback(t *testing.T) {
	for _, second := range []bool{true, false} {
		name := "data channel"
		if !second {
			name = "pkg/sftp on the main channel"
		}
		t.Run(name, func(t *testing.T) {
			ffs := newFaultFS()
			ffs.seqOnly, ffs.seqDelay = true, 30*time.Millisecond
			ts := newTestServer(t, ffs.handlers())
			ts.wrapSFTP = ffs.sniff
			if !second {
				ts.maxSFTP = 1
			}
			var logs logBuffer
			opts := append(baseOpts(ts), hsftp.WithConcurrency(8), hsftp.WithPacketSize(32<<10), hsftp.WithLogger(logs.logger()))
			s, err := hsftp.Dial(context.Background(), ts.addr, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// (The in-memory server takes 1 µs a byte: small files.)
			data := randomBytes(t, 512<<10+77)
			if err := writeAll(s, false, "/a.bin", 0, data); err != nil {
				t.Fatalf("upload: %v", err)
			}
			_, _, rejected, _ := ffs.counts()
			if rejected == 0 {
				t.Fatal("the server refused nothing: the fallback was not exercised")
			}
			if got := readAll(t, s, "/a.bin", 0, 0); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, want %d identical", len(got), len(data))
			}
			if n := strings.Count(logs.String(), "writes one request at a time from now on"); n != 1 {
				t.Fatalf("the fallback was logged %d times, want once:\n%s", n, logs.String())
			}
			// The session remembers: the next writer sends one request at a
			// time, and nothing is refused.
			ffs.resetCounts()
			if err := writeAll(s, false, "/a.bin", 256<<10, data[256<<10:]); err != nil {
				t.Fatalf("second writer: %v", err)
			}
			if inflight, _, rejected, _ := ffs.counts(); inflight != 1 || rejected != 0 {
				t.Fatalf("after the fallback: %d writes in flight at once, %d refused", inflight, rejected)
			}
			_ = s.Close()

			// Faulted, through the engine, both ways: every new session
			// finds out again.
			up := randomBytes(t, 1536<<10)
			res := engineUpload(t, ts, "/up.bin", up, 512<<10, opts...)
			t.Logf("engine upload: %+v", res)
			if !bytes.Equal(remoteBytes(t, ts, "/up.bin", opts...), up) {
				t.Fatal("engine upload: remote file differs")
			}
			got, _ := engineDownload(t, ts, "/up.bin", 512<<10, opts...)
			if !bytes.Equal(got, up) {
				t.Fatal("engine download: local file differs")
			}
			checkNoLeaks(t)
		})
	}
}

// A write failure that repeats when the write is sent alone is the
// writer's failure, reported at the contiguous mark; the session keeps
// pipelining.
func TestFailureIsNotTakenForOrder(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	ts.wrapSFTP = ffs.sniff
	var logs logBuffer
	s := dial(t, ts, hsftp.WithConcurrency(8), hsftp.WithPacketSize(32<<10), hsftp.WithLogger(logs.logger()))
	data := randomBytes(t, 2<<20)
	ffs.setFail(1<<20+5, errors.New("injected failure"))
	err := writeAll(s, false, "/f", 0, data)
	if err == nil || errors.Is(err, protocol.ErrNoSpace) || protocol.IsRetryable(err) {
		t.Fatalf("err = %v, want the injected failure, not retried", err)
	}
	if !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "at offset 1048576") {
		t.Fatalf("err = %v", err)
	}
	ffs.setFail(-1, nil)
	ffs.resetCounts()
	if err := writeAll(s, false, "/f", 0, data); err != nil {
		t.Fatal(err)
	}
	if inflight, _, _, _ := ffs.counts(); inflight < 2 {
		t.Fatalf("after a real failure the session writes %d request at a time", inflight)
	}
	if strings.Contains(logs.String(), "one request at a time from now on") {
		t.Fatal("a real failure was taken for a server that needs one request at a time")
	}
}

// A server that truncates a file whenever it is opened for writing: a
// resume is refused with ErrResumeUnsupported, and the engine restarts
// from zero.
func TestTruncatingServer(t *testing.T) {
	for _, second := range []bool{true, false} {
		name := "data channel"
		if !second {
			name = "pkg/sftp on the main channel"
		}
		t.Run(name, func(t *testing.T) {
			ffs := newFaultFS()
			ffs.truncOnOpen = true
			ts := newTestServer(t, ffs.handlers())
			if !second {
				ts.maxSFTP = 1
			}
			s := dial(t, ts)
			ctx := context.Background()
			data := randomBytes(t, 1<<20)
			if err := writeAll(s, false, "/t.bin", 0, data); err != nil {
				t.Fatal(err)
			}
			onlyResume := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, protocol.ErrResumeUnsupported) || protocol.IsRetryable(err) ||
					errors.Is(err, protocol.ErrProtocol) || errors.Is(err, protocol.ErrTransient) {
					t.Fatalf("%s: err = %v, want ErrResumeUnsupported only", what, err)
				}
			}
			_, err := s.OpenWriter(ctx, "/t.bin", 4096)
			onlyResume("OpenWriter at 4096", err)
			t.Logf("OpenWriter: %v", err)
			if err := writeAll(s, false, "/t.bin", 0, data); err != nil { // the open emptied it
				t.Fatal(err)
			}
			_, err = s.OpenRangeWriter(ctx, "/t.bin", 4096)
			onlyResume("OpenRangeWriter at 4096", err)
			if err := writeAll(s, false, "/t.bin", 0, data); err != nil {
				t.Fatal(err)
			}
			_, err = s.OpenRangeWriter(ctx, "/t.bin", 0)
			onlyResume("OpenRangeWriter at 0 of a file it emptied", err)
			// A file that is short already is no truncation: the hole is
			// refused as before.
			if err := writeAll(s, false, "/short.bin", 0, data[:100]); err != nil {
				t.Fatal(err)
			}
			_, err = s.OpenWriter(ctx, "/short.bin", 4096)
			if err == nil || errors.Is(err, protocol.ErrResumeUnsupported) || !strings.Contains(err.Error(), "hole") {
				t.Fatalf("OpenWriter past the end of a short file: %v", err)
			}
			// The session is still usable.
			if err := writeAll(s, false, "/t.bin", 0, data); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()

			// Faulted, through the engine: the resume is refused, the
			// upload starts again from zero once and ends identical. (Few
			// requests in flight: the cut comes after acknowledgements.)
			up := randomBytes(t, 3<<20)
			opts := append(baseOpts(ts), hsftp.WithConcurrency(4))
			res := engineUpload(t, ts, "/up.bin", up, 2<<20, opts...)
			if res.Restarts != 1 || !strings.Contains(lastRestarts.String(), "refused to resume") {
				t.Fatalf("upload: %d restarts (%s), want 1 as the server refused to resume (%+v)", res.Restarts, lastRestarts, res)
			}
			if !bytes.Equal(remoteBytes(t, ts, "/up.bin", baseOpts(ts)...), up) {
				t.Fatal("engine upload: remote file differs")
			}
			got, res := engineDownload(t, ts, "/up.bin", 1<<20, baseOpts(ts)...)
			if !bytes.Equal(got, up) {
				t.Fatal("engine download: local file differs")
			}
			if res.Restarts != 0 {
				t.Fatalf("download: %d restarts (reading does not truncate)", res.Restarts)
			}
		})
	}
}

// A server that writes every file it opens as one stream from offset 0
// (rclone serve sftp without a VFS cache): it opens a file at an offset,
// shows its size, and refuses only the writes. A resume is refused with
// ErrResumeUnsupported, and the engine restarts from zero.
func TestServerWritingOnlyFromStart(t *testing.T) {
	for _, second := range []bool{true, false} {
		name := "data channel"
		if !second {
			name = "pkg/sftp on the main channel"
		}
		t.Run(name, func(t *testing.T) {
			ffs := newFaultFS()
			ffs.fromStart = true
			ts := newTestServer(t, ffs.handlers())
			if !second {
				ts.maxSFTP = 1
			}
			s := dial(t, ts)
			ctx := context.Background()
			data := randomBytes(t, 1<<20)
			if err := writeAll(s, false, "/s.bin", 0, data); err != nil {
				t.Fatal(err)
			}
			for _, ranged := range []bool{true, false} {
				open := s.OpenWriter
				if ranged {
					open = s.OpenRangeWriter
				}
				_, err := open(ctx, "/s.bin", 4096)
				if !errors.Is(err, protocol.ErrResumeUnsupported) || protocol.IsRetryable(err) || errors.Is(err, protocol.ErrProtocol) {
					t.Fatalf("ranged %v: err = %v, want ErrResumeUnsupported only", ranged, err)
				}
				t.Logf("ranged %v: %v", ranged, err)
				if got := readAll(t, s, "/s.bin", 0, 0); ranged && !bytes.Equal(got, data) {
					t.Fatal("the refused range writer changed the file")
				}
			}
			_ = s.Close()

			// (The in-memory server takes 1 µs a byte: a small file.)
			up := randomBytes(t, 1536<<10)
			opts := append(baseOpts(ts), hsftp.WithConcurrency(4))
			res := engineUpload(t, ts, "/up.bin", up, 1<<20, opts...)
			if res.Restarts != 1 || !strings.Contains(lastRestarts.String(), "refused to resume") {
				t.Fatalf("upload: %d restarts (%s), want 1 as the server refused to resume (%+v)", res.Restarts, lastRestarts, res)
			}
			if !bytes.Equal(remoteBytes(t, ts, "/up.bin", opts...), up) {
				t.Fatal("engine upload: remote file differs")
			}
			got, res := engineDownload(t, ts, "/up.bin", 512<<10, opts...)
			if !bytes.Equal(got, up) || res.Restarts != 0 {
				t.Fatalf("engine download: identical %v, %d restarts", bytes.Equal(got, up), res.Restarts)
			}
		})
	}
}

// failingRSASigner advertises an RSA host key it cannot sign with: a
// server holding only an ed25519 key that still offers RSA, and aborts the
// handshake when the client picks it.
type failingRSASigner struct{ pub ssh.PublicKey }

func (s failingRSASigner) PublicKey() ssh.PublicKey { return s.pub }

func (s failingRSASigner) Sign(io.Reader, []byte) (*ssh.Signature, error) {
	return nil, errors.New("no RSA key here")
}

func (s failingRSASigner) SignWithAlgorithm(io.Reader, []byte, string) (*ssh.Signature, error) {
	return nil, errors.New("no RSA key here")
}

func newRSAAdvertiser(t *testing.T, handlers *faultFS) *testServer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(key.Public().(crypto.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return newTestServerConfig(t, handlers.handlers(), func(cfg *ssh.ServerConfig) {
		cfg.AddHostKey(failingRSASigner{pub})
	})
}

func TestHostKeyAlgorithmsModernFirst(t *testing.T) {
	ffs := newFaultFS()
	ts := newRSAAdvertiser(t, ffs)
	ctx := context.Background()
	creds := []hsftp.Option{hsftp.WithUser(testUser), hsftp.WithPassword(testPassword), hsftp.WithDialTimeout(5 * time.Second)}

	// The RSA path fails indeed: a client that asks for RSA only.
	c, err := ssh.Dial("tcp", ts.addr, &ssh.ClientConfig{User: testUser, Auth: []ssh.AuthMethod{ssh.Password(testPassword)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), HostKeyAlgorithms: []string{ssh.KeyAlgoRSASHA256}, Timeout: 5 * time.Second})
	if err == nil {
		c.Close()
		t.Fatal("the fake server's RSA path works")
	}

	recorded := filepath.Join(t.TempDir(), "known_hosts")
	modes := []struct {
		name string
		opts []hsftp.Option
	}{
		{"insecure", []hsftp.Option{hsftp.WithInsecureIgnoreHostKey()}},
		{"accept-new", []hsftp.Option{hsftp.WithAcceptNewHostKey(nil), hsftp.WithKnownHostsFile(recorded)}},
		{"known_hosts", []hsftp.Option{hsftp.WithKnownHostsFile(ts.knownHosts)}},
	}
	for _, m := range modes {
		s, err := hsftp.Dial(ctx, ts.addr, append(creds, m.opts...)...)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		_ = s.Close()
	}
	if b, err := os.ReadFile(recorded); err != nil || !strings.Contains(string(b), " ssh-ed25519 ") || strings.Contains(string(b), "rsa") {
		t.Fatalf("accept-new recorded %q, %v; want the ed25519 key", b, err)
	}

	// Faulted, through the engine, both ways, with --insecure-host-key.
	opts := append(creds, hsftp.WithInsecureIgnoreHostKey())
	data := randomBytes(t, 3<<20)
	engineUpload(t, ts, "/up.bin", data, 1<<20, opts...)
	if !bytes.Equal(remoteBytes(t, ts, "/up.bin", opts...), data) {
		t.Fatal("engine upload: remote file differs")
	}
	got, _ := engineDownload(t, ts, "/up.bin", 1<<20, opts...)
	if !bytes.Equal(got, data) {
		t.Fatal("engine download: local file differs")
	}
}

// A server whose exec fails (EOF) once after another channel of the
// connection closed: the hash method is the same on every run (md5 over
// exec), through the engine, faulted, both ways.
func TestExecEOFAfterChannelClose(t *testing.T) {
	requireTools(t, "sh", "md5sum", "sha1sum", "sha256sum", "head", "tail")
	ts := newTestServer(t, nil)
	ts.execDir = t.TempDir()
	ts.execEOFAfterClose = true
	var logs logBuffer
	opts := append(baseOpts(ts), hsftp.WithLogger(logs.logger()))
	data := randomBytes(t, 2<<20+5)
	for run := range 3 {
		_ = os.Remove(filepath.Join(ts.dir, "up.bin"))
		res := engineUpload(t, ts, "up.bin", data, 1<<20, opts...)
		if res.Verified != "sha1" {
			t.Fatalf("run %d: upload verified by %q, want sha1", run, res.Verified)
		}
		got, res := engineDownload(t, ts, "up.bin", 1<<20, opts...)
		if !bytes.Equal(got, data) {
			t.Fatalf("run %d: download differs", run)
		}
		if res.Verified != "sha1" {
			t.Fatalf("run %d: download verified by %q, want sha1", run, res.Verified)
		}
	}
	if b, err := os.ReadFile(filepath.Join(ts.dir, "up.bin")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("remote file differs: %v", err)
	}
	if ts.execEOFs.Load() == 0 {
		t.Fatal("no exec ended in EOF: the fault was not exercised")
	}
	if l := logs.String(); !strings.Contains(l, "server-side hashing by commands over SSH exec") || !strings.Contains(l, "why=") {
		t.Fatalf("the hash method and why were not logged:\n%s", l)
	}
	t.Logf("%d execs ended in EOF", ts.execEOFs.Load())
}

// The exec probe is run once more when it ends in EOF; when every exec
// does, the session offers no hash by exec and says why.
func TestExecProbeRetriedAfterEOF(t *testing.T) {
	requireTools(t, "sh", "md5sum", "sha1sum", "sha256sum", "head", "tail")
	ts := newTestServer(t, nil)
	ts.execDir = t.TempDir()
	ts.execEOFFirst = true
	s := dial(t, ts)
	if a := s.HashAlgorithms(); len(a) == 0 || a[0] != "sha1" {
		t.Fatalf("HashAlgorithms = %v after a probe that ended in EOF once", a)
	}
	if n := ts.execEOFs.Load(); n != 1 {
		t.Fatalf("%d execs ended in EOF, want 1", n)
	}

	always := newTestServer(t, nil)
	always.execHandler = func(ch ssh.Channel, cmd string, closed <-chan struct{}) {} // closes without a status
	var logs logBuffer
	s = dial(t, always, hsftp.WithLogger(logs.logger()))
	if a := s.HashAlgorithms(); len(a) != 0 {
		t.Fatalf("HashAlgorithms = %v from a server whose exec always ends without a status", a)
	}
	if n := always.execs.Load(); n != 2 {
		t.Fatalf("%d probes, want 2 (one retry)", n)
	}
	if !strings.Contains(logs.String(), "no server-side hashing") {
		t.Fatalf("no reason logged:\n%s", logs.String())
	}
}

// A context cancelled while the writer waits for replies ends Write and
// Close at once, and leaves no goroutine behind.
func TestCancelDuringWrite(t *testing.T) {
	for _, second := range []bool{true, false} {
		ffs := newFaultFS()
		ffs.seqOnly, ffs.seqDelay = true, time.Second // the first write hangs a second
		ts := newTestServer(t, ffs.handlers())
		if !second {
			ts.maxSFTP = 1
		}
		s := dial(t, ts, hsftp.WithConcurrency(4), hsftp.WithPacketSize(32<<10))
		ctx, cancel := context.WithCancel(context.Background())
		w, err := s.OpenWriter(ctx, "/c.bin", 0)
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, werr := io.Copy(w, bytes.NewReader(make([]byte, 4<<20)))
		cerr := w.Close()
		if werr == nil && cerr == nil {
			t.Fatalf("second channel %v: the write succeeded", second)
		}
		if d := time.Since(start); d > 700*time.Millisecond {
			t.Fatalf("second channel %v: Write and Close took %v after the cancel", second, d)
		}
		if w.Acked() != 0 {
			t.Fatalf("second channel %v: Acked = %d", second, w.Acked())
		}
		_ = s.Close()
		checkNoLeaks(t)
	}
}
