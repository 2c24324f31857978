package sftp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
	"golang.org/x/crypto/ssh"
)

// Servers that lie, flood and never answer. Each flood is generated
// lazily, is bounded in bytes (floodBudget) and ends as soon as the client
// closes the channel, so a test stops by itself whether or not the client
// defends itself.

const (
	floodBudget   = 1 << 30
	maxHeapGrowth = 16 << 20
	sampleEvery   = 1 << 20
)

// heapProbe records the peak of the heap in use above what it was when the
// probe was made; the flooding server samples it every sampleEvery bytes
// it sends, and the test once more at the end.
type heapProbe struct {
	mu   sync.Mutex
	base uint64
	peak uint64
}

func newHeapProbe() *heapProbe {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return &heapProbe{base: m.HeapInuse, peak: m.HeapInuse}
}

func (h *heapProbe) sample() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h.mu.Lock()
	h.peak = max(h.peak, m.HeapInuse)
	h.mu.Unlock()
}

func (h *heapProbe) growth() uint64 {
	h.sample()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak - h.base
}

// flood writes unit to w over and over until budget bytes were sent or
// w fails (the client closed the channel), and returns what it sent.
func flood(w io.Writer, unit string, budget int64, probe *heapProbe) int64 {
	chunk := []byte(strings.Repeat(unit, max(1, (32<<10)/len(unit))))
	var sent int64
	next := int64(sampleEvery)
	for sent < budget {
		n, err := w.Write(chunk)
		sent += int64(n)
		if sent >= next {
			probe.sample()
			next += sampleEvery
		}
		if err != nil {
			break
		}
	}
	return sent
}

func exitStatus(ch ssh.Channel, status uint32) {
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(&struct{ Status uint32 }{status}))
}

// answerProbe answers the exec hash probe as a server with coreutils does.
func answerProbe(ch ssh.Channel, cmd string) bool {
	if !strings.Contains(cmd, "haul-hash-probe") {
		return false
	}
	_, _ = io.WriteString(ch, "haul-hash-probe\n/usr/bin/sha256sum\n/usr/bin/md5sum\n/usr/bin/head\n/usr/bin/tail\n")
	exitStatus(ch, 0)
	return true
}

func TestHostileExecFlood(t *testing.T) {
	for _, c := range []struct {
		name  string
		probe bool // flood the probe, not the hash command
		err   bool // flood standard error
	}{
		{"hash output", false, false},
		{"hash error output", false, true},
		{"probe output", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			probe := newHeapProbe()
			var sent atomic.Int64
			ts := newTestServer(t, nil)
			ts.execHandler = func(ch ssh.Channel, cmd string, closed <-chan struct{}) {
				if !c.probe && answerProbe(ch, cmd) {
					return
				}
				var w io.Writer = ch
				if c.err {
					w = ch.Stderr()
				}
				sent.Store(flood(w, "0123456789abcdef0123456789abcdef  -\n", floodBudget, probe))
			}
			if err := os.WriteFile(filepath.Join(ts.dir, "f"), []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			s := dial(t, ts)
			start := time.Now()
			algos := s.HashAlgorithms()
			var err error
			if !c.probe {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_, err = s.Hash(ctx, "f", "sha256", 0, -1)
			}
			took := time.Since(start)
			_ = s.Close()
			ts.close() // the flood has ended once the server is down
			checkBounded(t, c.name, took, 5*time.Second, probe, sent.Load())
			if c.probe {
				if len(algos) != 0 {
					t.Fatalf("HashAlgorithms = %v after a flooded probe", algos)
				}
				return
			}
			if !errors.Is(err, protocol.ErrUnsupported) || len(err.Error()) > 1000 {
				t.Fatalf("Hash = %.300v, want ErrUnsupported", err)
			}
			t.Logf("Hash: %v", err)
		})
	}
}

func checkBounded(t *testing.T, what string, took, limit time.Duration, probe *heapProbe, sent int64) {
	t.Helper()
	g := probe.growth()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t.Logf("%s: took %v, heap growth %.1f MiB (peak RSS of the test process so far %d MiB), server sent %.1f MiB",
		what, took.Round(time.Millisecond), float64(g)/(1<<20), ru.Maxrss>>10, float64(sent)/(1<<20))
	if took > limit {
		t.Errorf("%s took %v, want < %v", what, took, limit)
	}
	if g > maxHeapGrowth {
		t.Errorf("%s: heap grew %d MiB, want < %d MiB", what, g>>20, maxHeapGrowth>>20)
	}
	if sent >= floodBudget/2 {
		t.Errorf("%s: the server sent %d MiB: the client kept reading", what, sent>>20)
	}
}

// An exec that never answers costs the probe's bound (here half the dial
// timeout, shorter than execProbeTimeout) or the caller's context, and its
// channel is closed.
func TestHostileExecNeverAnswers(t *testing.T) {
	t.Run("probe", func(t *testing.T) {
		ts := newTestServer(t, nil)
		chClosed := make(chan struct{})
		ts.execHandler = func(ch ssh.Channel, cmd string, closed <-chan struct{}) {
			<-closed
			close(chClosed)
		}
		const bound = time.Second // the probe gets half
		s := dial(t, ts, hsftp.WithDialTimeout(bound))
		start := time.Now()
		algos := s.HashAlgorithms()
		took := time.Since(start)
		t.Logf("HashAlgorithms = %v after %v", algos, took.Round(time.Millisecond))
		if len(algos) != 0 || took > bound+2*time.Second {
			t.Fatalf("HashAlgorithms = %v after %v", algos, took)
		}
		waitClosed(t, chClosed)
		// Only the exec channel was closed: the session goes on.
		if _, err := s.Stat(context.Background(), "."); err != nil {
			t.Fatalf("Stat after the probe: %v", err)
		}
		if _, err := s.Hash(context.Background(), "x", "sha256", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
			t.Fatalf("Hash = %v, want ErrUnsupported", err)
		}
	})
	t.Run("hash", func(t *testing.T) {
		ts := newTestServer(t, nil)
		chClosed := make(chan struct{})
		ts.execHandler = func(ch ssh.Channel, cmd string, closed <-chan struct{}) {
			if answerProbe(ch, cmd) {
				return
			}
			<-closed
			close(chClosed)
		}
		if err := os.WriteFile(filepath.Join(ts.dir, "f"), []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := dial(t, ts)
		if a := s.HashAlgorithms(); len(a) == 0 {
			t.Fatal("no exec hashing after a good probe")
		}
		const budget = 500 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		start := time.Now()
		_, err := s.Hash(ctx, "f", "sha256", 0, -1)
		took := time.Since(start)
		t.Logf("Hash: %v after %v", err, took.Round(time.Millisecond))
		if !errors.Is(err, context.DeadlineExceeded) || took > budget+2*time.Second {
			t.Fatalf("Hash = %v after %v, want the context's deadline", err, took)
		}
		waitClosed(t, chClosed)
	})
}

// waitClosed waits for the server to see the exec channel closed. The
// bound only turns a channel never closed into a failure instead of a hung
// test.
func waitClosed(t *testing.T, closed <-chan struct{}) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the exec channel was never closed")
	}
}

// A status message under SFTP's packet limit is read, but what errors show
// of it is cut and escaped.
func TestHostileStatusText(t *testing.T) {
	fsys := newFaultFS()
	long := strings.Repeat("disk says no ", 8000) // 100 KiB
	fsys.setFail(0, fmt.Errorf("\x1b[2J\x1b]0;title\x07write refused: %s", long))
	ts := newTestServer(t, fsys.handlers())
	s := dial(t, ts)
	w, err := s.OpenWriter(context.Background(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("some data"))
	err = w.Close()
	if err == nil {
		t.Fatal("write succeeded")
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	if len(msg) > protocol.MaxServerText+200 {
		t.Fatalf("error of %d bytes", len(msg))
	}
	if strings.ContainsAny(msg, "\x1b\x07") {
		t.Fatalf("terminal escape in the error: %q", msg)
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != 4 {
		t.Fatalf("status code lost: %#v", err)
	}
}

func TestHostileStatusEchoesPassword(t *testing.T) {
	fsys := newFaultFS()
	fsys.setFail(0, fmt.Errorf("write refused: your password is %s, by the way", testPassword+"-x"))
	ts := newTestServer(t, fsys.handlers())
	s := dial(t, ts)
	w, err := s.OpenWriter(context.Background(), "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("x"))
	err = w.Close()
	if err == nil || strings.Contains(err.Error(), testPassword) || !strings.Contains(err.Error(), "****") {
		t.Fatalf("Close = %v, want the password scrubbed", err)
	}
	t.Logf("error: %v", err)
}

func TestHostileNegativeSize(t *testing.T) {
	fsys := newFaultFS()
	fsys.statSize = -5 // the server sends 2^64-5
	ts := newTestServer(t, fsys.handlers())
	s := dial(t, ts)
	ctx := context.Background()
	w, err := s.OpenRangeWriter(ctx, "f", 0) // no size check
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
			t.Errorf("%s = %v, want ErrProtocol, not retried", what, err)
		}
	}
	fi, err := s.Stat(ctx, "f")
	check("Stat", err)
	if err == nil {
		t.Errorf("Stat gave size %d", fi.Size)
	}
	_, err = s.OpenReader(ctx, "f", 0) // on the read channel
	check("OpenReader", err)
	_, err = s.OpenWriter(ctx, "f", 3)
	check("OpenWriter at 3", err)
}

// A server that greets in FTP or TLS is no SSH server: say so at once.
func TestDialNotSSH(t *testing.T) {
	greeter := func(t *testing.T, greet func(c net.Conn)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		t.Cleanup(func() { ln.Close(); wg.Wait() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					greet(c)
				}()
			}
		}()
		return ln.Addr().String()
	}
	ftpAddr := greeter(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "220 (vsFTPd 3.0.3)\r\n")
		_, _ = io.Copy(io.Discard, c) // as vsftpd: wait for a command
	})
	ftpMulti := greeter(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "220-Welcome\r\n220-to a server\r\n220 ready\r\n")
		_, _ = io.Copy(io.Discard, c)
	})
	for name, addr := range map[string]string{"FTP": ftpAddr, "FTP multi-line": ftpMulti} {
		t.Run(name, func(t *testing.T) {
			checkNotSSH(t, addr, "FTP")
		})
	}
	t.Run("test bed vsftpd", func(t *testing.T) {
		checkNotSSH(t, testbedAddr(t, "VSFTPD_PORT"), "FTP")
	})
}

func checkNotSSH(t *testing.T, addr, proto string) {
	t.Helper()
	start := time.Now()
	_, err := hsftp.Dial(context.Background(), addr, hsftp.WithUser(testUser), hsftp.WithPassword(testPassword),
		hsftp.WithInsecureIgnoreHostKey())
	took := time.Since(start)
	t.Logf("%v after %v", err, took.Round(time.Millisecond))
	if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
		t.Fatalf("Dial = %v, want ErrProtocol, not retried", err)
	}
	if !strings.Contains(err.Error(), "speaks "+proto) {
		t.Errorf("error %q does not say the server speaks %s", err, proto)
	}
	if took > 2*time.Second {
		t.Errorf("Dial took %v", took)
	}
}

// testbedAddr returns 127.0.0.1 and the port the test bed's env file (see
// integration/testbed) gives for key, or skips the test with a message
// when there is no test bed or nothing listens there.
func testbedAddr(t *testing.T, key string) string {
	t.Helper()
	path := os.Getenv("HAUL_TESTBED_ENV")
	if path == "" && os.Getenv("HAUL_TESTBED_STATE") != "" {
		path = filepath.Join(os.Getenv("HAUL_TESTBED_STATE"), "env")
	}
	if path == "" {
		path = "/tmp/haul-testbed/env"
	}
	env := map[string]string{}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
				env[k] = v
			}
		}
		f.Close()
	}
	for _, k := range []string{"HOST", key} {
		if v := os.Getenv("HAUL_TESTBED_" + k); v != "" {
			env[k] = v
		}
	}
	if env[key] == "" {
		t.Skipf("no test bed (%s has no %s; start one with `make up`): this part runs against the in-process servers only", path, key)
	}
	host := env["HOST"]
	if host == "" {
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, env[key])
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Skipf("test bed %s (%s) not reachable: %v", key, addr, err)
	}
	c.Close()
	return addr
}

func TestDialHostNotFound(t *testing.T) {
	const host = "no-such-host.invalid"
	if _, err := net.DefaultResolver.LookupHost(context.Background(), host); err == nil {
		t.Skipf("%s resolves here", host)
	} else if de := (*net.DNSError)(nil); !errors.As(err, &de) || !de.IsNotFound {
		t.Skipf("this machine's resolver does not answer NXDOMAIN for %s (%v)", host, err)
	}
	_, err := hsftp.Dial(context.Background(), host, hsftp.WithUser(testUser), hsftp.WithPassword(testPassword),
		hsftp.WithInsecureIgnoreHostKey())
	if !errors.Is(err, fs.ErrNotExist) || protocol.IsRetryable(err) {
		t.Fatalf("Dial = %v, want fs.ErrNotExist, not retried", err)
	}
	if !strings.Contains(err.Error(), host) {
		t.Errorf("error %q does not name the host", err)
	}
	t.Logf("%v", err)
}
