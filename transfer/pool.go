package transfer

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/openhaul/haul/protocol"
)

// pool holds the logged-in sessions of one Client's endpoint.
//
// It counts slots: a slot is one unit of Config.MaxConns, held by an idle
// session, by a session lent out, or by a user that reserved it and has
// not dialled yet. A user that holds no slot waits for one (acquire); a
// user that already holds one and needs more at once (the ranges of a
// segmented transfer) never waits (acquireNow): waiting for a slot while
// holding one deadlocks as soon as every slot is held by such a waiter.
type pool struct {
	dial protocol.Dialer
	max  int
	// idleTimeout closes a session idle for this long; negative: no
	// session is kept idle at all.
	idleTimeout time.Duration
	// checkTimeout bounds the health check of an idle session before it
	// is reused.
	checkTimeout time.Duration
	// recentUse is the const recentUse (tests change it).
	recentUse time.Duration
	log       *slog.Logger

	mu sync.Mutex
	// used counts the slots held (idle sessions included). It exceeds
	// max only while users that already held a slot took more.
	used int
	// shortOut counts the slots held by short calls (acquireShort).
	shortOut int
	// loginTook is how long the last successful dial took.
	loginTook time.Duration
	// idle holds healthy sessions nobody uses, the most recently used
	// last.
	idle []idleSession
	// wake is closed (and replaced) whenever a slot or an idle session
	// frees, to wake the users waiting in acquire.
	wake   chan struct{}
	reaper *time.Timer // closes idle sessions past idleTimeout; nil until needed
	// reaping is set while reaper is scheduled.
	reaping bool
	closed  bool

	// gate admits one dial at a time until a login succeeded, so that a
	// wrong password or host key is tried once, not by every waiting
	// user at once; loggedIn opens it for good, and refused holds the
	// rejection, returned to every later user without dialling.
	gate     chan struct{}
	loggedIn bool
	// opened is closed when loggedIn is first set, so that the users
	// queued at the gate then dial at once, not one after another.
	opened  chan struct{}
	refused error
}

type idleSession struct {
	s     protocol.Session
	since time.Time
}

// slot is one slot of the pool, held by one user; s is the session in it,
// or nil until one is dialled or taken from the idle ones.
type slot struct {
	s protocol.Session
	// idleSince is when s was handed back to the pool, zero when it
	// was not taken from the idle ones.
	idleSince time.Time
	// unchecked is set when s was handed out without a health check.
	unchecked bool
	// short marks a slot of a short call (acquireShort).
	short bool
}

// recentUse is how long after a session was handed back healthy it is
// handed out again without a health check: a NOOP before each of a
// batch's Stats doubled its round trips, and came before each of its
// files. A remote call that then fails with its connection is made once
// more on a checked session (remoteAgain); a transfer's failed attempt is
// resumed on a new one, as after any cut.
const recentUse = time.Second

func newPool(dial protocol.Dialer, maxConns int, idleTimeout, checkTimeout time.Duration, log *slog.Logger) *pool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &pool{dial: dial, max: maxConns, idleTimeout: idleTimeout, checkTimeout: checkTimeout, recentUse: recentUse, log: log,
		wake: make(chan struct{}), gate: make(chan struct{}, 1), opened: make(chan struct{})}
}

// acquire returns a slot, waiting while all MaxConns are held and none is
// idle. An idle session comes with the slot (the most recently used one:
// the older ones then expire). It fails with the cause of ctx when ctx
// ends first, and with ErrClosed once the pool is closed.
func (p *pool) acquire(ctx context.Context) (*slot, error) {
	return p.acquireFor(ctx, false)
}

// acquireShort is acquire for a call that holds its session briefly (a
// Stat, a listing): while another such call holds a session, it waits up
// to shortWait for that one rather than log in again, and without bound
// while the first login is under way. A batch's rerun, which only looks
// at the remote files, then runs on one or two sessions instead of
// logging in once per worker (a login costs a server far more than a
// Stat); where calls take longer (a distant server), the wait runs out
// and more sessions are dialled.
func (p *pool) acquireShort(ctx context.Context) (*slot, error) {
	return p.acquireFor(ctx, true)
}

// shortWait bounds how long acquireShort waits for a session another
// short call holds before it dials one of its own: as long as the last
// login took (waiting longer than a login would costs more than the
// login), within these bounds.
func (p *pool) shortWait() time.Duration {
	return min(max(p.loginTook, minShortWait), maxShortWait)
}

const (
	minShortWait = 10 * time.Millisecond
	maxShortWait = time.Second
)

func (p *pool) acquireFor(ctx context.Context, short bool) (*slot, error) {
	var timer *time.Timer
	var expired <-chan time.Time
	for {
		if ctx.Err() != nil {
			// Also after a wake that raced with the end of ctx.
			return nil, context.Cause(ctx)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if s, since := p.popIdle(); s != nil {
			if short {
				p.shortOut++
			}
			p.mu.Unlock()
			return &slot{s: s, idleSince: since, short: short}, nil
		}
		wait := p.used >= p.max
		if !wait && short && p.shortOut > 0 {
			switch {
			case !p.loggedIn && p.refused == nil:
				wait = true // the first login: the gate admits one dial anyway
			case timer == nil:
				timer = time.NewTimer(p.shortWait())
				defer timer.Stop()
				expired = timer.C
				wait = true
			default:
				wait = expired != nil // nil once the timer fired
			}
		}
		if !wait {
			p.used++
			if short {
				p.shortOut++
			}
			p.mu.Unlock()
			return &slot{short: short}, nil
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-expired:
			expired = nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// acquireNow is acquire for a user that already holds a slot: it never
// waits, and takes a slot beyond MaxConns when none is free (that slot is
// given up, its session closed, when handed back).
func (p *pool) acquireNow() (*slot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if s, since := p.popIdle(); s != nil {
		return &slot{s: s, idleSince: since}, nil
	}
	p.used++
	return &slot{}, nil
}

// popIdle takes the most recently used idle session, with when it was
// handed back, or returns nil. p.mu must be held.
func (p *pool) popIdle() (protocol.Session, time.Time) {
	n := len(p.idle)
	if n == 0 {
		return nil, time.Time{}
	}
	is := p.idle[n-1]
	p.idle[n-1] = idleSession{}
	p.idle = p.idle[:n-1]
	return is.s, is.since
}

// session returns a usable session for sl: the one in it (or an idle one)
// once a health check passes, else a new one from the dialer. A session
// that fails the check is closed. The dialer's error is returned as it is:
// a rejected login must read exactly as without a pool.
func (p *pool) session(ctx context.Context, sl *slot) (protocol.Session, error) {
	return p.sessionFor(ctx, sl, false, false)
}

// sessionFor is session; waitBusy also waits (250 ms doubling, bounded)
// for a server that refuses a connection for having too many while the
// pool holds none of its connections (other clients do). Transfers do
// not wait so: the engine retries with its own backoff, in its events.
// trustRecent skips the health check of a session handed back less than
// recentUse ago, and sets sl.unchecked.
func (p *pool) sessionFor(ctx context.Context, sl *slot, waitBusy, trustRecent bool) (protocol.Session, error) {
	sl.unchecked = false
	if sl.s == nil {
		p.mu.Lock()
		if sl.s, sl.idleSince = p.popIdle(); sl.s != nil {
			// The idle session's slot merges into sl: one slot fewer.
			p.used--
			p.broadcast()
		}
		p.mu.Unlock()
	}
	if sl.s != nil && trustRecent && !sl.idleSince.IsZero() && time.Since(sl.idleSince) < p.recentUse {
		sl.unchecked = true
		return sl.s, nil
	}
	if sl.s != nil {
		err := p.check(ctx, sl.s)
		if err == nil {
			return sl.s, nil
		}
		p.log.Debug("pooled session failed its health check", "err", err)
		_ = sl.s.Close()
		sl.s = nil
	}
	for tries := 0; ; tries++ {
		s, err := p.dialOnce(ctx)
		if err == nil {
			sl.s = s
			return s, nil
		}
		if !errors.Is(err, protocol.ErrTooManyConns) || tries >= maxShrinks {
			return nil, err
		}
		if !p.shrink(ctx, sl) {
			if !waitBusy {
				return nil, err
			}
			// No session of ours holds the server's slots: someone
			// else's do. Wait a little for one to free.
			t := time.NewTimer(min(250*time.Millisecond<<tries, 4*time.Second))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, err
			}
			continue
		}
		if sl.s != nil {
			if p.check(ctx, sl.s) == nil {
				return sl.s, nil
			}
			_ = sl.s.Close()
			sl.s = nil
		}
	}
}

// dialOnce dials through the gate: until a login succeeded, one dial at
// a time, and none after a rejected login or host key (its error again).
func (p *pool) dialOnce(ctx context.Context) (protocol.Session, error) {
	p.mu.Lock()
	open, refused, closed := p.loggedIn, p.refused, p.closed
	p.mu.Unlock()
	if closed {
		return nil, &protocol.Error{Op: "dial", Err: ErrClosed}
	}
	if refused != nil {
		return nil, refused
	}
	if !open {
		select {
		case p.gate <- struct{}{}:
			defer func() { <-p.gate }()
		case <-p.opened:
			// A login succeeded while this user waited: dial
			// beside the others.
		case <-ctx.Done():
			return nil, &protocol.Error{Op: "dial", Err: context.Cause(ctx)}
		}
		p.mu.Lock()
		refused = p.refused
		p.mu.Unlock()
		if refused != nil {
			return nil, refused
		}
	}
	start := time.Now()
	s, err := p.dial(ctx)
	p.mu.Lock()
	switch {
	case err == nil:
		p.loginTook = time.Since(start)
		if !p.loggedIn {
			p.loggedIn = true
			close(p.opened)
		}
	case errors.Is(err, protocol.ErrAuth) || errors.Is(err, protocol.ErrHostKey):
		p.refused = err
	}
	p.mu.Unlock()
	return s, err
}

// maxShrinks bounds how often one session request gives way to a server
// that refuses connections for having too many (by lowering the cap, or,
// when no session of the pool is open, by waiting 250 ms, doubling, for
// other clients' connections to end: at most about 20 s in all).
const maxShrinks = 8

// shrink handles a connection the server refused for having too many
// (protocol.ErrTooManyConns) while sl's holder needed one: when other
// sessions of the pool exist, it lowers the pool's cap to their number
// (said once per new cap), gives sl's slot up and waits, as acquire does,
// for a slot within the new cap, which sl then stands for (with an idle
// session in it when one freed). It returns false, keeping sl, when no
// other session exists (the server refuses even one: the caller's error
// stands) or ctx ended.
func (p *pool) shrink(ctx context.Context, sl *slot) bool {
	p.mu.Lock()
	others := p.used - 1
	if others < 1 || p.closed {
		p.mu.Unlock()
		return false
	}
	if others < p.max {
		p.log.Warn("transfer: the server refused a connection for having too many: lowering the session cap",
			"from", p.max, "to", others)
		p.max = others
	}
	p.used-- // sl's slot
	p.broadcast()
	p.mu.Unlock()
	got, err := p.acquire(ctx)
	if err != nil {
		p.mu.Lock()
		p.used++ // sl keeps a slot, as the caller expects to hand back
		p.mu.Unlock()
		return false
	}
	sl.s = got.s
	return true
}

// check makes one round trip on s: NOOP where the session has a Checker
// (FTP), else a Stat of the login directory (SFTP), where an answer such
// as "no such file" also proves the connection works.
func (p *pool) check(ctx context.Context, s protocol.Session) error {
	ctx, cancel := context.WithTimeout(ctx, p.checkTimeout)
	defer cancel()
	if c, ok := s.(protocol.Checker); ok {
		return c.Check(ctx)
	}
	_, err := s.Stat(ctx, ".")
	if err != nil && answered(ctx, err) {
		return nil
	}
	return err
}

// put hands sl back. A healthy session is kept idle while the pool is
// open, idle sessions are wanted and the slot is within MaxConns; any
// other session is closed, and the slot freed.
func (p *pool) put(sl *slot, healthy bool) {
	if sl == nil {
		return
	}
	s := sl.s
	sl.s = nil
	p.mu.Lock()
	if sl.short {
		sl.short = false
		p.shortOut--
	}
	if s != nil && healthy && !p.closed && p.idleTimeout >= 0 && p.used <= p.max {
		p.idle = append(p.idle, idleSession{s: s, since: time.Now()})
		p.scheduleReap()
		p.broadcast()
		p.mu.Unlock()
		return
	}
	p.used--
	p.broadcast()
	p.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
}

// broadcast wakes every user waiting in acquire. p.mu must be held.
func (p *pool) broadcast() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// scheduleReap arms the reaper for the idle sessions. p.mu must be held.
func (p *pool) scheduleReap() {
	if p.reaping {
		return
	}
	p.reaping = true
	if p.reaper == nil {
		p.reaper = time.AfterFunc(p.idleTimeout, p.reap)
	} else {
		p.reaper.Reset(p.idleTimeout)
	}
}

// reap closes the sessions idle for idleTimeout or more, and arms the
// reaper again for the oldest one left.
func (p *pool) reap() {
	p.mu.Lock()
	if p.closed || !p.reaping {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	var expired []protocol.Session
	keep := p.idle[:0]
	for _, is := range p.idle {
		if now.Sub(is.since) >= p.idleTimeout {
			expired = append(expired, is.s)
		} else {
			keep = append(keep, is)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.used -= len(expired)
	if len(expired) > 0 {
		p.broadcast()
	}
	p.reaping = false
	if len(p.idle) > 0 {
		p.reaping = true
		p.reaper.Reset(p.idle[0].since.Add(p.idleTimeout).Sub(now))
	}
	p.mu.Unlock()
	for _, s := range expired {
		_ = s.Close()
	}
	if len(expired) > 0 {
		p.log.Debug("closed idle sessions", "count", len(expired))
	}
}

// close closes the idle sessions and refuses every later acquire. Slots
// still held are freed, their sessions closed, when handed back.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.used -= len(idle)
	if p.reaper != nil {
		p.reaper.Stop()
	}
	p.reaping = false
	p.broadcast()
	p.mu.Unlock()
	for _, is := range idle {
		_ = is.s.Close()
	}
}

// answered reports whether err is the server's answer to a request it
// understood (no such file, already exists, permission denied, a path or
// an operation refused) on a connection still in step, as opposed to a
// failure of the connection or of the session: a session that answered
// stays fit for the next request. A done ctx means the session aborted
// the call by closing its connection: never fit.
func answered(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	for _, k := range []error{fs.ErrNotExist, fs.ErrExist, fs.ErrPermission,
		protocol.ErrInvalidPath, protocol.ErrUnsupported, protocol.ErrResumeUnsupported} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// fit reports whether a session is still fit for reuse after a call on it
// with ctx ended with err.
func fit(ctx context.Context, err error) bool {
	if err == nil {
		return ctx.Err() == nil
	}
	return answered(ctx, err)
}
