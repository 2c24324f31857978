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
	cut            atomic.Bool  // torn down by a Close or Reset fault
	last           atomic.Int64 // when a byte last arrived, either way (UnixNano; see idle.go)
	up, down       side
}

// side is the accounting of one direction of a link.
type side struct {
	// mu is held by the reader around each Read and the accounting of its
	// bytes, so that a cut can wait for a Read in progress to finish.
	mu sync.Mutex
	// held is the bytes read from the source socket and not (yet) written
	// to the onward socket: in the reader's hands, in the channel, in the
	// writer's current chunk.
	held atomic.Int64
}

func (l *link) side(d Dir) *side {
	if d == Upstream {
		return &l.up
	}
	return &l.down
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

// run forwards both directions and returns when the link is torn down and
// all its goroutines have ended.
func (l *link) run() {
	up := make(chan chunk, inFlight)
	down := make(chan chunk, inFlight)
	l.writers.Store(2)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); l.read(Upstream, l.client, up) }()
	go func() { defer wg.Done(); l.read(Downstream, l.server, down) }()
	go func() { defer wg.Done(); l.write(Upstream, l.server, up) }()
	l.write(Downstream, l.client, down)
	wg.Wait()
	if l.cut.Load() {
		// Every byte still held was read and never written: the cut
		// dropped it.
		l.p.dropped(l.port, Upstream, l.up.held.Load())
		l.p.dropped(l.port, Downstream, l.down.held.Load())
	}
	l.p.unregister(l)
}

func (l *link) read(dir Dir, src *net.TCPConn, ch chan<- chunk) {
	defer close(ch)
	s := l.side(dir)
	for {
		b := bufPool.Get().(*[]byte)
		s.mu.Lock()
		n, err := src.Read(*b)
		s.held.Add(int64(n))
		s.mu.Unlock()
		at := time.Now()
		if n > 0 {
			l.last.Store(at.UnixNano())
		}
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
			l.cutDown(kind == Reset)
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
		l.side(dir).held.Add(-int64(w))
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
// cannot discard forwarded bytes. Where the send queue cannot be read (not
// Linux) it returns at once.
func (l *link) drain(c *net.TCPConn) {
	deadline := time.Now().Add(drainTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		_, pending, _, ok := queues(c)
		if !ok || pending == 0 {
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
func (l *link) teardown(reset bool) { l.stop(reset, false) }

// cutDown is teardown for a Close or Reset fault: it also counts the bytes
// the proxy drops (see Stats.DroppedUpstream).
func (l *link) cutDown(reset bool) { l.stop(reset, true) }

func (l *link) stop(reset, cut bool) {
	l.once.Do(func() {
		l.cancel()
		if cut {
			l.cut.Store(true)
			l.measure(reset)
		}
		for _, c := range []*net.TCPConn{l.client, l.server} {
			if reset {
				_ = c.SetLinger(0)
			} else {
				_ = c.CloseWrite()
			}
			_ = c.Close()
		}
	})
}

// measure counts, per direction, the bytes in the kernel queues that the
// teardown about to follow discards: the unread receive queue of the socket
// the direction reads from, and the bytes not sent yet from the send queue
// of the socket it writes to when that one is reset (by SO_LINGER 0, or by
// Linux because unread data remains when it is closed). Bytes sent but not
// acknowledged are not counted: they reach the peer before the RST does
// (on loopback always; the peer may just be delaying its ACK), and a reset
// socket can still read what it received. It first stops both readers, so
// that no byte moves from a receive queue into a user buffer after being
// counted there (user buffers are counted when the link's goroutines have
// ended, in run). Bytes that arrive between this and the close are not
// counted: best effort.
func (l *link) measure(reset bool) {
	// A read deadline in the past wakes a blocked Read and makes later
	// ones fail without reading; the readers' locks wait for a Read that
	// already got bytes to account them in held.
	past := time.Unix(1, 0)
	_ = l.client.SetReadDeadline(past)
	_ = l.server.SetReadDeadline(past)
	l.up.mu.Lock()
	l.down.mu.Lock()
	cIn, _, cOut, cOK := queues(l.client)
	sIn, _, sOut, sOK := queues(l.server)
	l.down.mu.Unlock()
	l.up.mu.Unlock()
	var up, down int64
	if cOK && sOK {
		up, down = cIn, sIn
		// Closing a socket with unread data resets it, like SO_LINGER 0.
		if reset || sIn > 0 {
			up += sOut
		}
		if reset || cIn > 0 {
			down += cOut
		}
	}
	l.p.dropped(l.port, Upstream, up)
	l.p.dropped(l.port, Downstream, down)
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
