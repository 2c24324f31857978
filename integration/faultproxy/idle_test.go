package faultproxy_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// An idle drop blackholes a connection the proxy saw idle for the set
// time: it echoes before, and afterwards nothing comes back, with no reset.
// Another connection that keeps talking is not dropped meanwhile.
func TestIdleDrop(t *testing.T) {
	e := echo(t)
	p := newProxy(t, e.port)
	const idle = time.Second
	p.SetIdleDrop(idle)
	c := dial(t, p, e.port)
	busy := dial(t, p, e.port)
	roundTrip := func(c net.Conn, d time.Duration) error {
		_ = c.SetDeadline(time.Now().Add(d))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		var b [1]byte
		_, err := io.ReadFull(c, b[:])
		return err
	}
	if err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatalf("echo before the drop: %v", err)
	}
	// Wait for the proxy's timer (the event), keeping busy busy; bounded.
	start := time.Now()
	for p.IdleDrops() == 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("no idle drop within 10s")
		}
		if err := roundTrip(busy, 5*time.Second); err != nil {
			t.Fatalf("the busy connection failed: %v", err)
		}
	}
	if el := time.Since(start); el < idle-idle/10 {
		t.Errorf("dropped after %v, want at least %v", el, idle)
	}
	err := roundTrip(c, idle/2)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("echo after the drop: %v, want silence (a timeout)", err)
	}
	if err := roundTrip(busy, 5*time.Second); err != nil {
		t.Fatalf("the busy connection was dropped too: %v", err)
	}
	if n := p.IdleDrops(); n != 1 {
		t.Errorf("IdleDrops = %d, want 1", n)
	}
}
