package ftp_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/protocol/ftp"
)

// Servers that lie, flood and trickle. Each flood is generated lazily, is
// bounded in bytes (floodBudget) and in time (floodWindow, a write
// deadline), and ends as soon as the client closes the connection, so a
// test stops by itself whether or not the client defends itself.

const (
	// floodBudget is what a flooding server sends at most: far more than
	// a client may keep.
	floodBudget = 1 << 30
	// floodWindow bounds a flood in time.
	floodWindow = 20 * time.Second
	// maxHeapGrowth is the most the heap may grow while a flood runs.
	maxHeapGrowth = 16 << 20
	// sampleEvery is how often (in bytes sent) a flood samples the heap.
	sampleEvery = 1 << 20
)

// heapProbe records the peak of the heap in use above what it was when the
// probe was made. The flooding server samples it as it sends (every
// sampleEvery bytes) and the test once more at the end: by events, not by
// a timer.
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

// growth is the peak heap growth seen.
func (h *heapProbe) growth() uint64 {
	h.sample()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak - h.base
}

// flood writes head, then unit over and over, until budget bytes were
// sent, the window passed or the client went away. It returns what it
// sent.
func flood(c net.Conn, head, unit string, budget int64, probe *heapProbe) int64 {
	_ = c.SetWriteDeadline(time.Now().Add(floodWindow))
	defer c.SetWriteDeadline(time.Time{})
	n, err := io.WriteString(c, head)
	sent := int64(n)
	if err != nil {
		return sent
	}
	chunk := []byte(strings.Repeat(unit, max(1, (32<<10)/len(unit))))
	next := int64(sampleEvery)
	for sent < budget {
		n, err := c.Write(chunk)
		sent += int64(n)
		if sent >= next && probe != nil {
			probe.sample()
			next += sampleEvery
		}
		if err != nil {
			break
		}
	}
	return sent
}

// floodResult is what a flooding server reports once its flood ended.
type floodResult struct{ sent int64 }

// checkBounded fails t unless the call took less than limit, the heap grew
// less than maxHeapGrowth and the client stopped the flood long before
// its end.
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

// checkProtocolErr fails t unless err matches protocol.ErrProtocol, is not
// retried and is short.
func checkProtocolErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded", what)
	}
	msg := err.Error()
	t.Logf("%s: error of %d bytes: %.300s", what, len(msg), msg)
	if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
		t.Errorf("%s: want ErrProtocol, not retried", what)
	}
	if len(msg) > 1000 {
		t.Errorf("%s: error of %d bytes", what, len(msg))
	}
}

// floodCase is one way a server floods a reply.
type floodCase struct {
	name, head, unit string
}

var floodCases = []floodCase{
	{"multi-line reply", "-welcome\r\n", "-flood flood flood flood flood flood flood flood flood\r\n"},
	{"lines without a code", "-welcome\r\n", "text that is no reply line at all, over and over\r\n"},
	{"empty lines", "-\r\n", "\r\n"},
	{"a line without end", " ", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
}

func TestHostileGreetingFlood(t *testing.T) {
	for _, fc := range floodCases {
		t.Run(fc.name, func(t *testing.T) {
			probe := newHeapProbe()
			done := make(chan floodResult, 1)
			srv := newFakeServer(t, func(s *fakeServer) {
				s.greet = func(c *fakeConn) bool {
					done <- floodResult{flood(c.c, "220"+fc.head, strings.ReplaceAll(fc.unit, "-flood", "220-flood"), floodBudget, probe)}
					return false
				}
			})
			start := time.Now()
			_, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithDialTimeout(10*time.Second))
			took := time.Since(start)
			checkBounded(t, "greeting flood", took, 5*time.Second, probe, (<-done).sent)
			checkProtocolErr(t, "Dial", err)
		})
	}
}

func TestHostileReplyFloodAfterLogin(t *testing.T) {
	for _, fc := range floodCases {
		t.Run(fc.name, func(t *testing.T) {
			probe := newHeapProbe()
			done := make(chan floodResult, 1)
			srv := newFakeServer(t, func(s *fakeServer) {
				s.override = func(c *fakeConn, verb, _ string) (bool, bool) {
					if verb != "SIZE" {
						return false, true
					}
					done <- floodResult{flood(c.c, "213"+fc.head, strings.ReplaceAll(fc.unit, "-flood", "213-flood"), floodBudget, probe)}
					return true, false
				}
			})
			s := dialFake(t, srv)
			start := time.Now()
			_, err := s.Stat(context.Background(), "f")
			took := time.Since(start)
			checkBounded(t, "reply flood", took, 5*time.Second, probe, (<-done).sent)
			checkProtocolErr(t, "Stat", err)
			// What is left of the reply cannot be told from the next one.
			if _, err := s.Stat(context.Background(), "f"); err == nil {
				t.Fatal("session usable after a reply was cut")
			}
		})
	}
	t.Run("FEAT during login", func(t *testing.T) {
		probe := newHeapProbe()
		done := make(chan floodResult, 1)
		srv := newFakeServer(t, func(s *fakeServer) {
			s.override = func(c *fakeConn, verb, _ string) (bool, bool) {
				if verb != "FEAT" {
					return false, true
				}
				done <- floodResult{flood(c.c, "211-Features:\r\n", " FEATURE\r\n", floodBudget, probe)}
				return true, false
			}
		})
		start := time.Now()
		_, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithCredentials("u", srv.password))
		checkBounded(t, "FEAT flood", time.Since(start), 5*time.Second, probe, (<-done).sent)
		checkProtocolErr(t, "Dial", err)
	})
}

// trickle writes head, then line every tick, until the client goes away.
func trickle(c net.Conn, head, line string, tick time.Duration) {
	if _, err := io.WriteString(c, head); err != nil {
		return
	}
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for i := 0; i < 100_000; i++ { // bounded: about half an hour at most
		<-tk.C
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
	}
}

// A reply that never ends but never breaks the bounds either ends with
// the dial timeout, or with the caller's context once logged in.
func TestHostileTrickle(t *testing.T) {
	t.Run("greeting", func(t *testing.T) {
		srv := newFakeServer(t, func(s *fakeServer) {
			s.greet = func(c *fakeConn) bool {
				trickle(c.c, "220-slow\r\n", "220-still going\r\n", 20*time.Millisecond)
				return false
			}
		})
		const timeout = 500 * time.Millisecond
		start := time.Now()
		_, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithDialTimeout(timeout))
		took := time.Since(start)
		if !errors.Is(err, protocol.ErrTransient) {
			t.Fatalf("Dial = %v, want a transient timeout", err)
		}
		if took > timeout+2*time.Second {
			t.Fatalf("Dial took %v with a dial timeout of %v", took, timeout)
		}
		t.Logf("ended after %v: %v", took.Round(time.Millisecond), err)
	})
	t.Run("SIZE", func(t *testing.T) {
		srv := newFakeServer(t, func(s *fakeServer) {
			s.override = func(c *fakeConn, verb, _ string) (bool, bool) {
				if verb != "SIZE" {
					return false, true
				}
				trickle(c.c, "213-slow\r\n", "213-still going\r\n", 20*time.Millisecond)
				return true, false
			}
		})
		s := dialFake(t, srv)
		const timeout = 500 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		_, err := s.Stat(ctx, "f")
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stat = %v, want the context's deadline", err)
		}
		if took > timeout+2*time.Second {
			t.Fatalf("Stat took %v with a deadline of %v", took, timeout)
		}
	})
}

// A reply under the bounds is read, but what errors show of it is cut.
func TestHostileLongReplyTextIsCut(t *testing.T) {
	long := strings.Repeat("very long reason ", 3500) // 59.5 KiB
	for name, reply := range map[string]string{
		"one line":   "550 " + long + "\r\n",
		"many lines": "550-first\r\n" + strings.Repeat("550-"+strings.Repeat("x", 100)+"\r\n", 400) + "550 last\r\n",
		"escapes":    "550 \x1b[2J\x1b]0;pwned\x07 " + long + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			srv := newFakeServer(t, func(s *fakeServer) {
				s.override = func(c *fakeConn, verb, _ string) (bool, bool) {
					if verb != "SIZE" && verb != "CWD" {
						return false, true
					}
					_, _ = io.WriteString(c.c, reply)
					return true, true
				}
			})
			s := dialFake(t, srv)
			_, err := s.Stat(context.Background(), "f")
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Stat = %v, want fs.ErrNotExist", err)
			}
			msg := err.Error()
			if len(msg) > protocol.MaxServerText+200 {
				t.Fatalf("error of %d bytes: %.300s...", len(msg), msg)
			}
			if strings.ContainsAny(msg, "\x1b\x07") {
				t.Fatalf("terminal escapes in the error: %q", msg)
			}
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != 550 {
				t.Fatalf("Code lost: %#v", err)
			}
			t.Logf("error: %s", msg)
			// The reply was read whole: the session goes on.
			if err := s.Check(context.Background()); err != nil {
				t.Fatalf("Check after a long reply: %v", err)
			}
		})
	}
}

func TestHostileServerEchoesPassword(t *testing.T) {
	const secret = "Tr0ub4dor&3-secret"
	var logBuf syncBuffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for name, reply := range map[string]string{
		"one line":   "530 Login incorrect for " + secret + "\r\n",
		"multi-line": "530-Login incorrect\r\n530-you said " + secret + "\r\n530 bye\r\n",
		"unexpected": "200 welcome " + secret + "\r\n", // not 230: jlaffaye reports the text
	} {
		t.Run("PASS "+name, func(t *testing.T) {
			logBuf.Reset()
			srv := newFakeServer(t, func(s *fakeServer) {
				s.password = secret
				s.override = func(c *fakeConn, verb, _ string) (bool, bool) {
					if verb != "PASS" {
						return false, true
					}
					_, _ = io.WriteString(c.c, reply)
					return true, true
				}
			})
			_, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithCredentials("u", secret), ftp.WithLogger(logger))
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("password in the error: %v", err)
			}
			if strings.Contains(logBuf.String(), secret) {
				t.Fatalf("password in the log:\n%s", logBuf.String())
			}
			if !strings.Contains(err.Error(), "****") {
				t.Errorf("error %q does not show where the password was", err)
			}
			t.Logf("error: %v", err)
		})
	}
	t.Run("later reply", func(t *testing.T) {
		logBuf.Reset()
		srv := newFakeServer(t, func(s *fakeServer) {
			s.password = secret
			s.override = func(c *fakeConn, verb, arg string) (bool, bool) {
				if verb != "SIZE" {
					return false, true
				}
				c.reply(550, arg+": no such file, and by the way your password is "+secret)
				return true, true
			}
		})
		s, err := ftp.Dial(context.Background(), srv.addr(), ftp.WithCredentials("u", secret), ftp.WithLogger(logger))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = s.Stat(context.Background(), "f")
		if !errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), secret) {
			t.Fatalf("Stat = %v", err)
		}
		if strings.Contains(logBuf.String(), secret) {
			t.Fatalf("password in the log:\n%s", logBuf.String())
		}
	})
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.Reset()
}

func TestHostileSizes(t *testing.T) {
	for _, reply := range []string{"213 -5", "213 -9223372036854775808", "213 5 bytes", "213 99999999999999999999", "213 "} {
		t.Run(reply, func(t *testing.T) {
			srv := newFakeServer(t, func(s *fakeServer) {
				s.override = func(c *fakeConn, verb, _ string) (bool, bool) {
					if verb != "SIZE" {
						return false, true
					}
					_, _ = io.WriteString(c.c, reply+"\r\n")
					return true, true
				}
			})
			srv.setFile("f", []byte("0123456789"))
			s := dialFake(t, srv)
			ctx := context.Background()
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
			_, err = s.OpenReader(ctx, "f", 0)
			check("OpenReader", err)
			_, err = s.OpenWriter(ctx, "f", 3)
			check("OpenWriter at 3", err)
			_, err = s.Hash(ctx, "f", "sha256", 2, -1)
			if !errors.Is(err, protocol.ErrUnsupported) { // HASH cannot hash a range: no SIZE sent
				check("Hash", err)
			}
			// The reply was whole: the session is in step.
			if err := s.Check(ctx); err != nil {
				t.Fatalf("Check: %v", err)
			}
			for _, c := range srv.commands() {
				if strings.HasPrefix(c, "RETR") || strings.HasPrefix(c, "STOR") || strings.HasPrefix(c, "REST") {
					t.Errorf("sent %q after a bad size", c)
				}
			}
		})
	}
	t.Run("MLST", func(t *testing.T) {
		srv := newFakeServer(t, func(s *fakeServer) {
			s.override = func(c *fakeConn, verb, arg string) (bool, bool) {
				switch verb {
				case "SIZE":
					c.reply(502, "no SIZE")
				case "FEAT":
					_, _ = io.WriteString(c.c, "211-Features:\r\n MLST size*;type*;\r\n211 End\r\n")
				case "MLST":
					_, _ = fmt.Fprintf(c.c, "250-Listing %s\r\n size=18446744073709551611;type=file; %s\r\n250 End\r\n", arg, arg)
				default:
					return false, true
				}
				return true, true
			}
		})
		s := dialFake(t, srv)
		fi, err := s.Stat(context.Background(), "f")
		if !errors.Is(err, protocol.ErrProtocol) {
			t.Fatalf("Stat = %+v, %v; want ErrProtocol", fi, err)
		}
	})
}

// A server that greets in SSH is an SSH server: say so at once.
func TestDialSSHServer(t *testing.T) {
	greeting := "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
	srv := newFakeServer(t, func(s *fakeServer) {
		s.greet = func(c *fakeConn) bool {
			_, _ = io.WriteString(c.c, greeting)
			_, _ = io.Copy(io.Discard, c.c) // as sshd: wait for the client's version
			return false
		}
	})
	_, clientCfg := selfSigned(t)
	for name, opts := range map[string][]ftp.Option{
		"ftp":           nil,
		"explicit TLS":  {ftp.WithExplicitTLS(clientCfg)},
		"implicit TLS":  {ftp.WithImplicitTLS(clientCfg)},
		"default timer": {ftp.WithDialTimeout(ftp.DefaultDialTimeout)},
	} {
		t.Run(name, func(t *testing.T) {
			checkSSHServer(t, srv.addr(), opts...)
		})
	}
	t.Run("test bed sshd", func(t *testing.T) {
		addr := testbedAddr(t, "SSHD_PORT")
		checkSSHServer(t, addr)
	})
}

func checkSSHServer(t *testing.T, addr string, opts ...ftp.Option) {
	t.Helper()
	start := time.Now()
	_, err := ftp.Dial(context.Background(), addr, opts...)
	took := time.Since(start)
	if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
		t.Fatalf("Dial = %v, want ErrProtocol, not retried", err)
	}
	if !strings.Contains(err.Error(), "sftp://") || !strings.Contains(err.Error(), "SSH") {
		t.Errorf("error %q does not say to use sftp://", err)
	}
	if took > 2*time.Second {
		t.Errorf("Dial took %v", took)
	}
	t.Logf("%v after %v", err, took.Round(time.Millisecond))
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
		t.Skipf("no test bed (%s has no %s; start one with `make up`): this part runs against the in-process server only", path, key)
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
		t.Skipf("this machine's resolver does not answer NXDOMAIN for %s (%v): see classify_test for the rule", host, err)
	}
	start := time.Now()
	_, err := ftp.Dial(context.Background(), net.JoinHostPort(host, "21"))
	if !errors.Is(err, fs.ErrNotExist) || protocol.IsRetryable(err) {
		t.Fatalf("Dial = %v, want fs.ErrNotExist, not retried", err)
	}
	if !strings.Contains(err.Error(), host) {
		t.Errorf("error %q does not name the host", err)
	}
	t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
}

func TestDialRefusedIsTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = ftp.Dial(context.Background(), addr)
	if !errors.Is(err, protocol.ErrTransient) {
		t.Fatalf("Dial = %v, want ErrTransient", err)
	}
}
