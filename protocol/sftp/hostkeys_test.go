package sftp_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// recorder counts the calls of WithAcceptNewHostKey's callback.
type recorder struct {
	calls atomic.Int32
	mu    sync.Mutex
	host  string
	key   ssh.PublicKey
}

func (r *recorder) record(host string, key ssh.PublicKey) {
	r.calls.Add(1)
	r.mu.Lock()
	r.host, r.key = host, key
	r.mu.Unlock()
}

func dialAcceptNew(ts *testServer, file string, r *recorder) (*hsftp.Session, error) {
	return hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser), hsftp.WithPassword(testPassword),
		hsftp.WithKnownHostsFile(file), hsftp.WithAcceptNewHostKey(r.record))
}

// hostLine is the line accept-new records for ts's host key.
func hostLine(ts *testServer) string {
	return knownhosts.Line([]string{knownhosts.Normalize(ts.addr)}, ts.hostKey.PublicKey()) + "\n"
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAcceptNewHostKeyRecordsUnknownHost: no known_hosts file and no
// directory: both are created (0700, 0600), the key is recorded under
// "[host]:port", the callback hears of it once; the next dial, with or
// without accept-new, uses the recorded key and writes nothing.
func TestAcceptNewHostKeyRecordsUnknownHost(t *testing.T) {
	ts := newTestServer(t, nil)
	dir := filepath.Join(t.TempDir(), "ssh")
	file := filepath.Join(dir, "known_hosts")
	var r recorder
	s, err := dialAcceptNew(ts, file, &r)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	_ = s.Close()
	if got := readFile(t, file); got != hostLine(ts) {
		t.Fatalf("known_hosts holds %q, want %q", got, hostLine(ts))
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, file: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}
	if n := r.calls.Load(); n != 1 || r.host != knownhosts.Normalize(ts.addr) || !strings.HasPrefix(r.host, "[127.0.0.1]:") ||
		ssh.FingerprintSHA256(r.key) != ssh.FingerprintSHA256(ts.hostKey.PublicKey()) {
		t.Errorf("callback: %d calls, host %q, key %v", n, r.host, r.key)
	}

	// Second dial: the recorded key is used, nothing is written.
	s, err = dialAcceptNew(ts, file, &r)
	if err != nil {
		t.Fatalf("second Dial: %v", err)
	}
	_ = s.Close()
	// And a dial that does not accept new keys trusts the line.
	s, err = hsftp.Dial(context.Background(), ts.addr, hsftp.WithUser(testUser), hsftp.WithPassword(testPassword),
		hsftp.WithKnownHostsFile(file))
	if err != nil {
		t.Fatalf("Dial without accept-new: %v", err)
	}
	_ = s.Close()
	if got := readFile(t, file); got != hostLine(ts) || r.calls.Load() != 1 {
		t.Errorf("after the second dial: %d callbacks, known_hosts %q", r.calls.Load(), got)
	}
	checkNoLeaks(t)
}

// TestAcceptNewHostKeyRefusesChangedKey: a host recorded with another key
// is refused as without accept-new (both fingerprints named, no login
// attempted), and the file is left byte for byte as it was.
func TestAcceptNewHostKeyRefusesChangedKey(t *testing.T) {
	ts := newTestServer(t, nil)
	other := newSigner(t)
	file := ts.writeKnownHosts(other.PublicKey())
	before := readFile(t, file)
	var r recorder
	_, err := dialAcceptNew(ts, file, &r)
	var he *hsftp.HostKeyError
	if !errors.Is(err, protocol.ErrHostKey) || !errors.As(err, &he) || len(he.Expected) != 1 {
		t.Fatalf("err = %v, want a host key mismatch", err)
	}
	for _, fp := range []string{ssh.FingerprintSHA256(other.PublicKey()), ssh.FingerprintSHA256(ts.hostKey.PublicKey())} {
		if !strings.Contains(err.Error(), fp) {
			t.Errorf("message %q lacks fingerprint %s", err, fp)
		}
	}
	if protocol.IsRetryable(err) {
		t.Errorf("%v is retryable", err)
	}
	if got := readFile(t, file); got != before {
		t.Errorf("known_hosts changed from %q to %q", before, got)
	}
	if n := r.calls.Load(); n != 0 {
		t.Errorf("callback called %d times", n)
	}
	if n := ts.authAttempts.Load(); n != 0 {
		t.Errorf("%d authentication attempts after a host key mismatch", n)
	}
	checkNoLeaks(t)
}

// TestAcceptNewHostKeyConcurrentDials: the segments of a transfer dial a
// new host at once: one line is written, the callback runs once. A line
// recorded by someone else, and a last line without its newline, are
// kept as they are.
func TestAcceptNewHostKeyConcurrentDials(t *testing.T) {
	ts := newTestServer(t, nil)
	other := newSigner(t)
	file := filepath.Join(t.TempDir(), "known_hosts")
	// Another host's line, without its final newline.
	foreign := knownhosts.Line([]string{"[elsewhere.example]:2222"}, other.PublicKey())
	if err := os.WriteFile(file, []byte(foreign), 0o600); err != nil {
		t.Fatal(err)
	}
	var r recorder
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := dialAcceptNew(ts, file, &r)
			if err == nil {
				_ = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("dial %d: %v", i, err)
		}
	}
	if got, want := readFile(t, file), foreign+"\n"+hostLine(ts); got != want {
		t.Errorf("known_hosts holds %q, want %q", got, want)
	}
	if c := r.calls.Load(); c != 1 {
		t.Errorf("callback called %d times, want 1", c)
	}

	// A file that already holds the line (another process wrote it): a
	// new dial adds nothing.
	file2 := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(file2, []byte(hostLine(ts)+hostLine(ts)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := dialAcceptNew(ts, file2, &r)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	_ = s.Close()
	if got := readFile(t, file2); got != hostLine(ts)+hostLine(ts) || r.calls.Load() != 1 {
		t.Errorf("known_hosts became %q, %d callbacks", got, r.calls.Load())
	}
	checkNoLeaks(t)
}

// TestAcceptNewHostKeyUnwritable: a key that cannot be recorded leaves
// the server unverified: ErrHostKey, not retried, no login attempted.
func TestAcceptNewHostKeyUnwritable(t *testing.T) {
	ts := newTestServer(t, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "known_hosts")
	// A link into a directory that does not exist: reading finds no file,
	// creating it fails (also for root).
	if err := os.Symlink(filepath.Join(dir, "missing", "known_hosts"), file); err != nil {
		t.Fatal(err)
	}
	var r recorder
	_, err := dialAcceptNew(ts, file, &r)
	if !errors.Is(err, protocol.ErrHostKey) || protocol.IsRetryable(err) || !strings.Contains(err.Error(), file) {
		t.Fatalf("err = %v, want ErrHostKey naming %s", err, file)
	}
	if n := r.calls.Load(); n != 0 {
		t.Errorf("callback called %d times", n)
	}
	if n := ts.authAttempts.Load(); n != 0 {
		t.Errorf("%d authentication attempts", n)
	}
	checkNoLeaks(t)
}

func TestAcceptNewHostKeyContradictsInsecure(t *testing.T) {
	for _, opts := range [][]hsftp.Option{
		{hsftp.WithAcceptNewHostKey(nil), hsftp.WithInsecureIgnoreHostKey()},
		{hsftp.WithInsecureIgnoreHostKey(), hsftp.WithAcceptNewHostKey(nil)},
	} {
		_, err := hsftp.Dial(context.Background(), "127.0.0.1:1",
			append([]hsftp.Option{hsftp.WithUser("u"), hsftp.WithPassword("x")}, opts...)...)
		if err == nil || !strings.Contains(err.Error(), "contradict") {
			t.Errorf("err = %v, want a contradiction", err)
		}
	}
}
