package faultproxy_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
)

// server is an in-process TCP server on 127.0.0.1 with an ephemeral port.
type server struct {
	ln   net.Listener
	port int
	wg   sync.WaitGroup
	mu   sync.Mutex
	got  []int64 // bytes received per connection, once it ended
}

// newServer serves each connection with fn; fn returns the bytes it read.
func newServer(t *testing.T, fn func(c net.Conn) int64) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				n := fn(c)
				s.mu.Lock()
				s.got = append(s.got, n)
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *server) received() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.got...)
}

// source writes size pseudo-random bytes to each connection, then closes.
func source(t *testing.T, size int64) *server {
	return newServer(t, func(c net.Conn) int64 {
		_, _ = io.Copy(c, io.LimitReader(newRand(), size))
		return 0
	})
}

// sink reads each connection to its end and records the byte count.
func sink(t *testing.T) *server {
	return newServer(t, func(c net.Conn) int64 {
		n, _ := io.Copy(io.Discard, c)
		return n
	})
}

// echo copies each connection back to itself.
func echo(t *testing.T) *server {
	return newServer(t, func(c net.Conn) int64 {
		n, _ := io.Copy(c, c)
		return n
	})
}

type randReader struct{ r *rand.ChaCha8 }

func newRand() io.Reader { return randReader{rand.NewChaCha8([32]byte{1, 2, 3})} }

func (r randReader) Read(b []byte) (int, error) { return r.r.Read(b) }

func newProxy(t *testing.T, ports ...int) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.NewLoopback("127.0.0.1", ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *faultproxy.Proxy, port int) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readAll reads c to its end with an overall deadline and returns the count
// and the final error (nil for a clean EOF).
func readAll(t *testing.T, c net.Conn) (int64, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, c)
	return n, err
}

const size = 8 << 20

func TestNoFaultIntegrity(t *testing.T) {
	src := source(t, size)
	p := newProxy(t, src.port)
	n, err := readAll(t, dial(t, p, src.port))
	if err != nil || n != size {
		t.Fatalf("read %d, %v; want %d, nil", n, err, size)
	}
	// Compare content with what the source sends.
	c := dial(t, p, src.port)
	h1, h2 := sha256.New(), sha256.New()
	if _, err := io.Copy(h1, c); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(h2, io.LimitReader(newRand(), size))
	if !bytes.Equal(h1.Sum(nil), h2.Sum(nil)) {
		t.Fatal("content differs")
	}
	if s := p.Stats(); s.Accepted != 2 || s.Downstream != 2*size {
		t.Fatalf("stats %+v", s)
	}
}

func TestCloseDownstreamExact(t *testing.T) {
	const after = 3<<20 + 12345
	src := source(t, size)
	p := newProxy(t, src.port)
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Close, Dir: faultproxy.Downstream, After: after})
	n, err := readAll(t, dial(t, p, src.port))
	if err != nil || n != after {
		t.Fatalf("read %d, %v; want %d, clean EOF", n, err, after)
	}
	<-a.Fired()
	if a.Count() != 1 {
		t.Fatalf("count %d", a.Count())
	}
	// One-shot: the next connection gets everything.
	if n, err := readAll(t, dial(t, p, src.port)); err != nil || n != size {
		t.Fatalf("second read %d, %v", n, err)
	}
}

func TestResetDownstreamExact(t *testing.T) {
	const after = 5<<20 + 7
	src := source(t, size)
	p := newProxy(t, src.port)
	p.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: faultproxy.Downstream, After: after})
	n, err := readAll(t, dial(t, p, src.port))
	if !errors.Is(err, syscall.ECONNRESET) || n != after {
		t.Fatalf("read %d, %v; want %d, ECONNRESET", n, err, after)
	}
}

func TestUpstreamExact(t *testing.T) {
	for _, kind := range []faultproxy.Kind{faultproxy.Close, faultproxy.Reset} {
		t.Run(kind.String(), func(t *testing.T) {
			const after = 1<<20 + 3
			dst := sink(t)
			p := newProxy(t, dst.port)
			a := p.Inject(faultproxy.Fault{Kind: kind, Dir: faultproxy.Upstream, After: after})
			c := dial(t, p, dst.port)
			_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, werr := io.Copy(c, io.LimitReader(newRand(), size))
			if werr == nil {
				t.Fatal("write of 8 MiB through a cut connection succeeded")
			}
			<-a.Fired()
			got := waitReceived(t, dst, 1)
			if kind == faultproxy.Close && got[0] != after {
				t.Fatalf("server received %d, want %d", got[0], after)
			}
			if kind == faultproxy.Reset && got[0] > after {
				t.Fatalf("server received %d, more than %d", got[0], after)
			}
		})
	}
}

func waitReceived(t *testing.T, s *server, n int) []int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got := s.received(); len(got) >= n {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("server saw %d connections end, want %d", len(s.received()), n)
	return nil
}

func TestBlackholeExact(t *testing.T) {
	const after = 1 << 20
	src := source(t, size)
	p := newProxy(t, src.port)
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: faultproxy.Downstream, After: after})
	c := dial(t, p, src.port)
	if _, err := io.ReadFull(c, make([]byte, after)); err != nil {
		t.Fatal(err)
	}
	<-a.Fired()
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 {
		t.Fatalf("read after blackhole: %d, %v; want 0, deadline", n, err)
	}
	if s := p.Stats(); s.Live != 1 || s.Downstream != after {
		t.Fatalf("stats %+v", s)
	}
	// Writes are not forwarded either, and nothing fails.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	p.Release()
	if n, err := readAll(t, c); n != 0 || err != nil {
		t.Fatalf("after Release: %d, %v; want 0, EOF", n, err)
	}
	if s := p.Stats(); s.Upstream != 0 {
		t.Fatalf("upstream forwarded %d", s.Upstream)
	}
}

func TestGroupAndRepeat(t *testing.T) {
	// Each connection carries 60000 bytes; the fault's budget of 100000
	// bytes is shared by both ports and fires three times in all.
	const per, after = 60000, 100000
	s1, s2 := source(t, per), source(t, per)
	p := newProxy(t, s1.port, s2.port)
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Close, Dir: faultproxy.Downstream, After: after, Repeat: 2})
	want := []struct {
		port int
		n    int64
	}{
		{s1.port, per}, {s2.port, after - per}, // fires at 100000
		{s1.port, per}, {s2.port, after - per}, // fires at 200000
		{s1.port, per}, {s2.port, after - per}, // fires at 300000
		{s1.port, per}, {s2.port, per}, // done
	}
	for i, w := range want {
		if n, err := readAll(t, dial(t, p, w.port)); err != nil || n != w.n {
			t.Fatalf("connection %d read %d, %v; want %d", i, n, err, w.n)
		}
	}
	if a.Count() != 3 {
		t.Fatalf("count %d, want 3", a.Count())
	}
}

func TestPortsFilter(t *testing.T) {
	ctl, data := source(t, size), source(t, size)
	p := newProxy(t, ctl.port, data.port)
	p.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: faultproxy.Downstream, Ports: []int{data.port}})
	if n, err := readAll(t, dial(t, p, ctl.port)); err != nil || n != size {
		t.Fatalf("unfaulted port read %d, %v", n, err)
	}
	// The reset fires on the first downstream byte, that is as soon as the
	// proxy has connected to the server: under load it can reach the client
	// before the client's connect has even returned, which Go then reports
	// as a dial error (the socket's SO_ERROR is ECONNRESET). Both are the
	// fault at work.
	var n int64
	c, err := net.DialTimeout("tcp", p.Addr(data.port), 5*time.Second)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		n, err = readAll(t, c)
	}
	if !errors.Is(err, syscall.ECONNRESET) || n != 0 {
		t.Fatalf("faulted port read %d, %v; want 0, reset", n, err)
	}
}

func TestTap(t *testing.T) {
	e := echo(t)
	p := newProxy(t, e.port)
	up, down := p.Tap(e.port, faultproxy.Upstream), p.Tap(e.port, faultproxy.Downstream)
	c := dial(t, p, e.port)
	const cmds = "USER haultest\r\nTYPE I\r\nRETR f\r\n"
	if _, err := io.WriteString(c, cmds); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(cmds))); err != nil {
		t.Fatal(err)
	}
	if up.String() != cmds || !bytes.Equal(down.Bytes(), []byte(cmds)) || up.Len() != len(cmds) {
		t.Fatalf("tap up %q down %q", up.String(), down.String())
	}
	if p.Tap(e.port, faultproxy.Upstream) != up {
		t.Fatal("Tap returned a new recorder")
	}
}

func TestRate(t *testing.T) {
	const n, bps = 1 << 20, 2 << 20
	src := source(t, n)
	p := newProxy(t, src.port)
	p.SetRate(bps)
	start := time.Now()
	got, err := readAll(t, dial(t, p, src.port))
	el := time.Since(start)
	if err != nil || got != n {
		t.Fatalf("read %d, %v", got, err)
	}
	// 1 MiB at 2 MiB/s: about 0.5 s; loose bounds for a noisy machine.
	if el < 400*time.Millisecond || el > 5*time.Second {
		t.Fatalf("1 MiB at 2 MiB/s took %v", el)
	}
	p.SetRate(0)
	start = time.Now()
	if got, err := readAll(t, dial(t, p, src.port)); err != nil || got != n {
		t.Fatalf("read %d, %v", got, err)
	}
	if el := time.Since(start); el > 300*time.Millisecond {
		t.Fatalf("unthrottled 1 MiB took %v", el)
	}
}

func TestLatency(t *testing.T) {
	e := echo(t)
	p := newProxy(t, e.port)
	p.SetLatency(100 * time.Millisecond)
	c := dial(t, p, e.port)
	start := time.Now()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 200*time.Millisecond || rtt > 3*time.Second {
		t.Fatalf("round trip %v, want about 200ms", rtt)
	}
}

func TestDialFailureRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens on the target any more
	p := newProxy(t, port)
	// The reset can beat the end of the client's connect on loopback.
	c, err := net.DialTimeout("tcp", p.Addr(port), 5*time.Second)
	if err == nil {
		defer c.Close()
		_, err = readAll(t, c)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %v; want a reset", err)
	}
}

func TestCloseWithLiveConnsNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	src := source(t, 1<<40) // endless
	e := echo(t)
	p, err := faultproxy.NewLoopback("127.0.0.1", src.port, e.port)
	if err != nil {
		t.Fatal(err)
	}
	p.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: faultproxy.Upstream, Ports: []int{e.port}, After: 2})
	p.SetLatency(time.Millisecond)
	var conns []net.Conn
	for range 3 {
		conns = append(conns, dial(t, p, src.port))
	}
	holed := dial(t, p, e.port)
	if _, err := holed.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conns[0], make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(conns, holed) {
		if _, err := readAll(t, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("conn after Close: %v", err)
		}
		c.Close()
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(src.port), time.Second); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
	src.ln.Close()
	e.ln.Close()
	src.wg.Wait()
	e.wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestPortRangeAndLoopback(t *testing.T) {
	if got := faultproxy.PortRange(30000, 30002); len(got) != 3 || got[0] != 30000 || got[2] != 30002 {
		t.Fatalf("PortRange = %v", got)
	}
	if got := faultproxy.PortRange(5, 4); len(got) != 0 {
		t.Fatalf("empty PortRange = %v", got)
	}
	a, b := faultproxy.NextLoopback(), faultproxy.NextLoopback()
	if a == b || net.ParseIP(a) == nil || !net.ParseIP(b).IsLoopback() {
		t.Fatalf("NextLoopback gave %s, %s", a, b)
	}
	if _, err := faultproxy.New("127.0.0.1", "127.0.0.1"); err == nil {
		t.Fatal("New without ports succeeded")
	}
	// A taken address is skipped by NewLoopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if _, err := faultproxy.New("127.0.0.1", "127.0.0.1", port); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("New on a taken port: %v", err)
	}
}
