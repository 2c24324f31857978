package resume

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// watchdog cancels an attempt's context with ErrStalled when no progress
// was reported for the stall timeout. Progress is reported by touch, which
// is cheap enough to call for every chunk.
type watchdog struct {
	start   time.Time
	last    atomic.Int64 // nanoseconds since start of the last touch
	timeout time.Duration
	cancel  context.CancelCauseFunc
	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	paused  bool
}

// newWatchdog returns a watchdog over cancel; timeout <= 0 disables it.
func newWatchdog(timeout time.Duration, cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{start: time.Now(), timeout: timeout, cancel: cancel}
	if timeout > 0 {
		w.timer = time.AfterFunc(timeout, w.check)
	}
	return w
}

func (w *watchdog) touch() {
	w.last.Store(int64(time.Since(w.start)))
}

func (w *watchdog) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.paused {
		w.timer.Reset(w.timeout)
		return
	}
	idle := time.Since(w.start) - time.Duration(w.last.Load())
	if idle >= w.timeout {
		w.cancel(ErrStalled)
		return
	}
	w.timer.Reset(w.timeout - idle)
}

// pause suspends the watchdog (for a step that legitimately moves no
// byte for long, guarded by a deadline of its own); resume restarts it.
func (w *watchdog) pause() {
	if w.timer == nil {
		return
	}
	w.mu.Lock()
	w.paused = true
	w.mu.Unlock()
}

func (w *watchdog) resume() {
	if w.timer == nil {
		return
	}
	w.touch()
	w.mu.Lock()
	w.paused = false
	w.mu.Unlock()
}

func (w *watchdog) stop() {
	if w.timer == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
}

// meter counts the bytes of one attempt and reports progress.
type meter struct {
	n        atomic.Int64
	base     int64 // bytes already at the destination when the attempt began
	total    int64
	dog      *watchdog
	progress func(done, total int64)
	// limit, when set, paces the bytes (Config.RateLimit), under ctx.
	limit *rate.Limiter
	ctx   context.Context
}

func (m *meter) add(n int) {
	if n <= 0 {
		return
	}
	v := m.n.Add(int64(n))
	m.dog.touch()
	if m.progress != nil {
		m.progress(m.base+v, m.total)
	}
	if m.limit != nil {
		m.pace(n)
	}
}

// pace waits until the rate limit allows n more bytes. Waiting counts as
// progress for the stall watchdog.
func (m *meter) pace(n int) {
	burst := m.limit.Burst()
	for n > 0 {
		k := min(n, burst)
		if m.limit.WaitN(m.ctx, k) != nil {
			return // cancelled: the transfer's own calls report it
		}
		m.dog.touch()
		n -= k
	}
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	m *meter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.m.add(n)
	return n, err
}

// countingWriter counts what is written through it.
type countingWriter struct {
	w io.Writer
	m *meter
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.m.add(n)
	return n, err
}
