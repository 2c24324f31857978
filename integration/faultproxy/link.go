package faultproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

const (
	// bufSize is the size of one read, and so the largest chunk.
	bufSize = 32 << 10
	// inFlight is how many chunks per direction wait between the reading
	// and the writing goroutine (needed for latency).
	inFlight = 8
	// drainTimeout bounds the wait for the peer to acknowledge forwarded
	// bytes before a Close or Reset fault.
	drainTimeout = 5 * time.Second
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// errStopped ends a writer whose link is torn down or blackholed.
var errStopped = errors.New("faultproxy: link stopped")

// link is one proxied connection: a client socket, a server socket and, per
// direction, a reader goroutine feeding a writer goroutine through a small
// channel of chunks.
type link struct {
	p              *Proxy
	port           int
	client, server *net.TCPConn
	ctx            context.Context
	cancel         context.CancelFunc
	once           sync.Once
	holed          atomic.Bool
	writers        atomic.Int32 // writers still running normally
}

type chunk struct {
	buf *[]byte
	n   int
	at  time.Time
	err error
}

func newLink(p *Proxy, port int, client, server *net.TCPConn) *link {
	ctx, cancel := context.WithCancel(p.ctx)
	return &link{p: p, port: port, client: client, server: server, ctx: ctx, cancel: cancel}
}

// run forwards both directions and returns when the link is torn down.
func (l *link) run() {
	up := make(chan chunk, inFlight)
	down := make(chan chunk, inFlight)
	l.writers.Store(2)
	l.p.wg.Add(3)
	go func() { defer l.p.wg.Done(); l.read(l.client, up) }()
	go func() { defer l.p.wg.Done(); l.read(l.server, down) }()
	go func() { defer l.p.wg.Done(); l.write(Upstream, l.server, up) }()
	l.write(Downstream, l.client, down)
}

func (l *link) read(src *net.TCPConn, ch chan<- chunk) {
	defer close(ch)
	for {
		b := bufPool.Get().(*[]byte)
		n, err := src.Read(*b)
		at := time.Now()
		if n == 0 {
			bufPool.Put(b)
		} else if !l.send(ch, chunk{buf: b, n: n, at: at}) {
			return
		}
		if err != nil {
			l.send(ch, chunk{at: at, err: err})
			return
		}
	}
}

// send hands c to the writer unless the link is torn down first.
func (l *link) send(ch chan<- chunk, c chunk) bool {
	select {
	case ch <- c:
		return true
	case <-l.ctx.Done():
		return false
	}
}

func (l *link) write(dir Dir, dst *net.TCPConn, ch <-chan chunk) {
	var th throttle
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-ch:
		case <-l.ctx.Done():
			return
		}
		if !ok || l.park() {
			return
		}
		if d := time.Duration(l.p.latency.Load()); d > 0 {
			if !l.sleepUntil(c.at.Add(d)) {
				return
			}
		}
		switch {
		case c.err == nil:
			err := l.forward(dir, dst, (*c.buf)[:c.n], &th)
			bufPool.Put(c.buf)
			if err != nil {
				if !errors.Is(err, errStopped) {
					l.teardown(isReset(err))
				}
				return
			}
		case errors.Is(c.err, io.EOF):
			// Half close: pass the FIN on; the link ends when both
			// directions have ended.
			_ = dst.CloseWrite()
			if l.writers.Add(-1) == 0 {
				l.teardown(false)
			}
			return
		default:
			l.teardown(isReset(c.err))
			return
		}
	}
}

// park blocks while the link is blackholed and reports whether it was.
func (l *link) park() bool {
	if !l.holed.Load() {
		return false
	}
	<-l.ctx.Done()
	return true
}

func (l *link) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// forward writes b to dst, applying faults at their exact byte.
func (l *link) forward(dir Dir, dst *net.TCPConn, b []byte, th *throttle) error {
	for len(b) > 0 {
		if l.park() {
			return errStopped
		}
		k, kind := l.p.reserve(l.port, dir, len(b))
		if err := l.put(dir, dst, b[:k], th); err != nil {
			return err
		}
		b = b[k:]
		switch kind {
		case Close, Reset:
			l.drain(dst)
			l.teardown(kind == Reset)
			return errStopped
		case Blackhole:
			l.holed.Store(true)
			<-l.ctx.Done()
			return errStopped
		}
	}
	return nil
}

// put writes b in pieces the rate limit allows.
func (l *link) put(dir Dir, dst *net.TCPConn, b []byte, th *throttle) error {
	for len(b) > 0 {
		n := len(b)
		if r := l.p.rate.Load(); r > 0 {
			lim := th.limiter(r)
			n = min(n, lim.Burst())
			if err := lim.WaitN(l.ctx, n); err != nil {
				return errStopped
			}
		}
		l.p.tap(l.port, dir, b[:n]) // before the write: a reply cannot overtake it
		w, err := dst.Write(b[:n])
		l.p.forwarded(l.port, dir, int64(w))
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// drain waits, bounded by drainTimeout, until the peer on c has
// acknowledged every byte written to c, so that a following close or reset
// cannot discard forwarded bytes.
func (l *link) drain(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(drainTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		pending, ioErr := 0, error(nil)
		ctlErr := rc.Control(func(fd uintptr) {
			pending, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		})
		if ctlErr != nil || ioErr != nil || pending == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-l.ctx.Done():
			return
		}
	}
}

// teardown closes both sockets once: with RST when reset, else FIN.
func (l *link) teardown(reset bool) {
	l.once.Do(func() {
		l.cancel()
		for _, c := range []*net.TCPConn{l.client, l.server} {
			if reset {
				_ = c.SetLinger(0)
			} else {
				_ = c.CloseWrite()
			}
			_ = c.Close()
		}
		l.p.unregister(l)
	})
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED)
}

// throttle is one direction's rate limiter, rebuilt when the rate changes.
type throttle struct {
	lim  *rate.Limiter
	rate int64
}

func (t *throttle) limiter(r int64) *rate.Limiter {
	if t.lim == nil || t.rate != r {
		burst := int(min(max(r/16, 1), bufSize))
		t.lim = rate.NewLimiter(rate.Limit(r), burst)
		t.rate = r
	}
	return t.lim
}
