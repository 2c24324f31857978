package resume

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/openhaul/haul/protocol"
	"golang.org/x/time/rate"
)

// attemptFunc runs one attempt on a fresh session. It returns nil only
// when the transfer is complete and verified.
type attemptFunc func(ctx context.Context, sess protocol.Session, a *attempt) error

// attempt is what one attempt needs from the runner.
type attempt struct {
	ctx   context.Context
	n     int // 1-based attempt number
	dog   *watchdog
	meter *meter
	r     *runner
	// keep, set by a successful attempt, hands its session to the runner
	// (runner.kept) instead of closing it.
	keep bool
	// progressed is set when the attempt started beyond every earlier one.
	progressed bool
	// acked, when set (>= 0), is what the attempt moved as acknowledged
	// by the protocol, which is more exact than the bytes read from the
	// source.
	acked int64
}

// start creates the attempt's byte meter once the starting offset is known.
// An offset beyond every earlier attempt's is the proof that the earlier
// attempts made progress: only the destination's state counts, not bytes
// handed to a socket that may never have arrived.
func (a *attempt) start(offset int64) *meter {
	if offset > a.r.best {
		a.r.best = offset
		a.progressed = true
	}
	if a.r.res.StartOffset < 0 {
		a.r.res.StartOffset = offset
	}
	a.meter = &meter{base: offset, total: a.r.res.Size, dog: a.dog, progress: a.r.cfg.Progress, limit: a.r.limit, ctx: a.ctx}
	a.r.emit(Event{Kind: EventAttempt, Attempt: a.n, Offset: offset})
	return a.meter
}

func (a *attempt) moved() int64 {
	if a.acked >= 0 {
		return a.acked
	}
	if a.meter == nil {
		return 0
	}
	return a.meter.n.Load()
}

// runner is the retry loop shared by uploads and downloads.
type runner struct {
	cfg  Config
	log  *slog.Logger
	op   string
	path string
	dial protocol.Dialer
	res  Result
	// best is the highest offset an attempt started at, -1 before any.
	best int64
	// limit paces all the transfer's bytes (Config.RateLimit), or nil.
	limit *rate.Limiter
	// pending, when set, is a logged-in session the next attempt uses
	// instead of dialing (one login saved); kept is the session of a
	// successful attempt that set keep.
	pending, kept protocol.Session
	// onFailure, when set, runs after every failed attempt.
	onFailure func()
	// committed reports the bytes known to be at the destination, for
	// the final error.
	committed func() int64
}

func (r *runner) emit(e Event) {
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(e)
	}
}

func (r *runner) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = r.cfg.initialBackoff()
	b.MaxInterval = r.cfg.maxBackoff()
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxElapsedTime = 0 // never stop on elapsed time: a long transfer is not a failure
	b.Reset()
	return b
}

// run performs attempts until one succeeds, a failure is permanent, the
// budget of attempts without progress is spent or ctx is done.
func (r *runner) run(ctx context.Context, do attemptFunc) (Result, error) {
	began := time.Now()
	b := r.newBackoff()
	noProgress := 0   // failures since the destination last grew
	storageFails := 0 // ErrStorage failures since the destination last grew
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return r.fail(began, n-1, context.Cause(ctx))
		}
		a := &attempt{n: n, r: r, acked: -1}
		err := r.once(ctx, a, do)
		moved := a.moved()
		r.res.Transferred += moved
		r.res.Attempts = n
		if err == nil {
			r.finish(began, n)
			return r.res, nil
		}
		r.emit(Event{Kind: EventFailed, Attempt: n, Bytes: moved, Err: err})
		if r.onFailure != nil {
			r.onFailure()
		}
		r.log.Warn("attempt failed", "op", r.op, "path", r.path, "attempt", n, "bytes", moved, "err", err)
		if ctx.Err() != nil {
			// Stopped from outside: that is the reason, whatever the
			// attempt's own error says.
			return r.fail(began, n, context.Cause(ctx))
		}
		if !retryable(err) {
			return r.fail(began, n, err)
		}
		if a.progressed {
			noProgress, storageFails = 0, 0
			b.Reset()
		}
		noProgress++
		if errors.Is(err, protocol.ErrStorage) {
			storageFails++
			if storageFails >= 2 {
				// The server failed to store data twice at the same
				// offset. A full disk is the usual reason; some servers
				// (vsftpd) say nothing more precise.
				return r.fail(began, n, errors.Join(protocol.ErrNoSpace, errStorageRepeated, err))
			}
		}
		if noProgress >= r.cfg.maxAttempts() {
			return r.fail(began, n, errors.Join(ErrRetriesExhausted, err))
		}
		if moved >= quickRetryBytes && noProgress == 1 {
			// A link that carried data for a while just broke: resume at
			// once. Backing off is for failures that repeat.
			r.log.Info("resuming", "op", r.op, "path", r.path, "reuse", r.pending != nil)
			continue
		}
		wait := b.NextBackOff()
		r.emit(Event{Kind: EventBackoff, Attempt: n, Wait: wait})
		r.log.Info("reconnecting", "op", r.op, "path", r.path, "wait", wait, "reuse", r.pending != nil)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			r.dropPending()
			return r.fail(began, n, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// once runs one attempt under its own context, watched by the stall
// watchdog, on a session it dials and closes.
func (r *runner) once(ctx context.Context, a *attempt, do attemptFunc) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a.ctx = actx
	a.dog = newWatchdog(r.cfg.stallTimeout(), cancel)
	defer a.dog.stop()
	// A meter exists from the start so that a stall before the first
	// byte is still seen; start() replaces it once the offset is known.
	a.meter = &meter{dog: a.dog}
	err := func() error {
		sess := r.pending
		r.pending = nil
		if sess == nil {
			var err error
			if sess, err = r.dial(actx); err != nil {
				return err
			}
		}
		a.dog.touch()
		err := do(actx, sess, a)
		switch {
		case err == nil && a.keep:
			r.kept = sess
		case err != nil && r.reusable(ctx, actx, sess, err):
			r.pending = sess // the next attempt goes on without a new login
		default:
			sess.Close()
		}
		return err
	}()
	if err != nil {
		return attemptErr(ctx, actx, err)
	}
	return nil
}

// quickRetryBytes is how much an attempt must have moved for its failure
// to be resumed without a backoff wait.
const quickRetryBytes = 1 << 20

// checkTimeout bounds the health check of a session after a failure.
const checkTimeout = 5 * time.Second

// reusable reports whether sess may carry the next attempt after a
// transient failure: it must not have stalled (a blackholed connection is
// not asked twice), and a round trip on it must succeed now.
func (r *runner) reusable(parent, actx context.Context, sess protocol.Session, err error) bool {
	c, ok := sess.(protocol.Checker)
	if !ok || !retryable(err) || parent.Err() != nil || actx.Err() != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(parent, min(checkTimeout, max(r.cfg.stallTimeout(), time.Second)))
	defer cancel()
	return c.Check(ctx) == nil
}

// finish fills in the result's totals.
func (r *runner) finish(began time.Time, attempts int) {
	r.res.Duration = time.Since(began)
	r.res.Attempts = attempts
	r.res.StartOffset = max(r.res.StartOffset, 0)
	r.res.ResentBytes = max(0, r.res.Transferred-(r.res.Size-r.res.StartOffset))
}

// dropPending closes a session kept for an attempt that will not come.
func (r *runner) dropPending() {
	if r.pending != nil {
		r.pending.Close()
		r.pending = nil
	}
}

func (r *runner) fail(began time.Time, attempts int, err error) (Result, error) {
	r.dropPending()
	r.finish(began, attempts)
	var committed int64
	if r.committed != nil {
		committed = r.committed()
	}
	return r.res, &Error{Op: r.op, Path: r.path, Committed: committed, Attempts: attempts, Err: err}
}

func newRunner(op, path string, dial protocol.Dialer, cfg Config) *runner {
	return &runner{cfg: cfg, log: cfg.logger(), op: op, path: path, dial: dial, best: -1, limit: cfg.limiterOrNil()}
}

// localError marks an error of the local side (reading the source,
// writing the destination). It is never retried, except that a full local
// disk is reported as protocol.ErrNoSpace.
type localError struct {
	op  string
	err error
}

func (e *localError) Error() string { return "local " + e.op + ": " + e.err.Error() }
func (e *localError) Unwrap() []error {
	if errors.Is(e.err, protocol.ErrNoSpace) || protocol.Classify(e.err) == protocol.ErrNoSpace {
		return []error{protocol.ErrNoSpace, e.err}
	}
	return []error{e.err}
}

// localReader tags errors of a local source so they are not mistaken for
// network failures.
type localReader struct {
	r   io.Reader
	err *error
}

func (l *localReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		le := &localError{op: "read", err: err}
		*l.err = le
		return n, le
	}
	return n, err
}

// localWriter tags errors of a local destination.
type localWriter struct {
	w   io.Writer
	err *error
}

func (l *localWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if err != nil {
		le := &localError{op: "write", err: err}
		*l.err = le
		return n, le
	}
	return n, err
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
