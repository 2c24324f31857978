package faultproxy

import (
	"time"
)

// SetIdleDrop makes the proxy behave like a NAT or firewall with an idle
// timeout: a connection accepted from now on on which no byte has arrived,
// in either direction, for d is blackholed (see Blackhole): nothing more is
// forwarded either way and both sockets stay open, so neither peer hears
// of it. The idle time is measured by the proxy with a timer per
// connection, re-armed for the rest of d whenever it finds that bytes
// moved. TCP keepalive probes carry no byte and do not count (unlike on
// some real NATs). 0 or less turns it off for new connections. Release or
// Close ends dropped connections.
func (p *Proxy) SetIdleDrop(d time.Duration) { p.idleDrop.Store(int64(max(d, 0))) }

// IdleDrops returns how many connections the idle timeout has dropped.
func (p *Proxy) IdleDrops() int64 { return p.idleDrops.Load() }

// watchIdle starts l's idle timer when SetIdleDrop is on. It ends with l.
func (p *Proxy) watchIdle(l *link) {
	d := time.Duration(p.idleDrop.Load())
	if d <= 0 {
		return
	}
	l.last.Store(time.Now().UnixNano())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			select {
			case <-l.ctx.Done():
				return
			case <-t.C:
			}
			idle := time.Since(time.Unix(0, l.last.Load()))
			if idle < d {
				t.Reset(d - idle)
				continue
			}
			l.holed.Store(true)
			p.idleDrops.Add(1)
			p.log().Debug("faultproxy: idle connection dropped", "port", l.port, "idle", idle)
			return
		}
	}()
}
