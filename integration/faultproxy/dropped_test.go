package faultproxy_test

import (
	"io"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
)

// waitGone waits (bounded) until p has no live connection left, so that
// its counters for the connections it had are final.
func waitGone(t *testing.T, p *faultproxy.Proxy) faultproxy.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := p.Stats(); s.Live == 0 {
			return s
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("connections still live: %+v", p.Stats())
	return faultproxy.Stats{}
}

// A cut that fires on the first upstream byte forwards nothing: whatever
// the proxy had read or received by then is dropped and counted.
func TestCutCountsDropped(t *testing.T) {
	for _, kind := range []faultproxy.Kind{faultproxy.Close, faultproxy.Reset} {
		t.Run(kind.String(), func(t *testing.T) {
			const written = 256 << 10
			dst := sink(t)
			p := newProxy(t, dst.port)
			a := p.Inject(faultproxy.Fault{Kind: kind, Dir: faultproxy.Upstream, After: 0})
			c := dial(t, p, dst.port)
			_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, _ = io.Copy(c, io.LimitReader(newRand(), written)) // may fail: the cut
			<-a.Fired()
			got := waitReceived(t, dst, 1)
			s := waitGone(t, p)
			if got[0] != 0 || s.Upstream != 0 {
				t.Fatalf("forwarded %d, server got %d; want 0", s.Upstream, got[0])
			}
			if s.DroppedUpstream <= 0 || s.DroppedUpstream > written || s.DroppedDownstream != 0 {
				t.Fatalf("dropped up %d, down %d; want up in (0, %d], down 0",
					s.DroppedUpstream, s.DroppedDownstream, written)
			}
		})
	}
}

// Connections that end without a cut drop nothing.
func TestNoCutDropsNothing(t *testing.T) {
	src := source(t, size)
	p := newProxy(t, src.port)
	c := dial(t, p, src.port)
	if n, err := readAll(t, c); err != nil || n != size {
		t.Fatalf("read %d, %v", n, err)
	}
	_ = c.Close()
	if s := waitGone(t, p); s.DroppedUpstream != 0 || s.DroppedDownstream != 0 {
		t.Fatalf("stats %+v", s)
	}
}
