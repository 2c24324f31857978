package faultproxy_test

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/openhaul/haul/integration/faultproxy"
)

// unacked returns the bytes in c's send queue its peer has not acknowledged.
func unacked(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioErr error
	if err := rc.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ioErr != nil {
		t.Fatal(err, ioErr)
	}
	return n
}

// With the server not reading (and a small receive buffer), bytes pile up
// in the proxy: in its receive queue from the client (made large with
// SetReadBuffer), its buffers and its send queue to the server. A reset
// drops all of them; the dropped count plus what reached the server is
// what the client's kernel handed over.
func TestResetCountsQueuedExactly(t *testing.T) {
	const written = 1 << 20
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	poke, readNow := make(chan struct{}), make(chan struct{})
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		<-poke
		if _, err := c.Write([]byte{1}); err != nil { // fires the cut
			got <- -1
			return
		}
		<-readNow
		// What the server's kernel had received, readable after the RST.
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	p := newProxy(t, ln.Addr().(*net.TCPAddr).Port)
	p.SetReadBuffer(written)
	c := dial(t, p, ln.Addr().(*net.TCPAddr).Port)
	defer close(readNow)
	defer close(poke)
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(c, io.LimitReader(newRand(), written)); err != nil {
		t.Fatal(err)
	}
	// Wait until the proxy's kernel has acknowledged every byte.
	deadline := time.Now().Add(10 * time.Second)
	for unacked(t, c) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("client still has %d unacknowledged bytes", unacked(t, c))
		}
		time.Sleep(time.Millisecond)
	}
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: faultproxy.Downstream, After: 0})
	poke <- struct{}{}
	<-a.Fired()
	s := waitGone(t, p)
	readNow <- struct{}{}
	n := <-got
	t.Logf("server got %d, proxy forwarded %d, dropped up %d, down %d", n, s.Upstream, s.DroppedUpstream, s.DroppedDownstream)
	// Exact but for bytes the proxy's kernel had sent and the server not
	// yet acknowledged: not counted as dropped, and yet lost when the
	// server's small buffer had no room for them (a retransmission that
	// never came). A few segments at most.
	const inFlight = 64 << 10
	if sum := n + s.DroppedUpstream; sum > written || sum < written-inFlight || s.DroppedUpstream <= 0 {
		t.Fatalf("server got %d + dropped %d = %d, want %d (less at most %d; dropped > 0)",
			n, s.DroppedUpstream, sum, written, inFlight)
	}
	if s.DroppedDownstream != 1 {
		t.Fatalf("dropped downstream %d, want the 1 triggering byte", s.DroppedDownstream)
	}
}
