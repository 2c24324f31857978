package transfer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

// Client moves files to and from one server and works on its files. It
// keeps a pool of logged-in sessions, so that a series of calls logs in
// once rather than once per call:
//
//   - Sessions are dialled lazily, at most Config.MaxConns at once; a call
//     that finds them all in use waits for one (honouring its context).
//   - A session is health-checked before it is reused (FTP NOOP; SFTP a
//     Stat of the login directory); one that fails the check is closed
//     and a new one dialled. A session on which a call failed (other than
//     by an answer such as "no such file") is closed, not pooled.
//   - A session idle for Config.IdleTimeout is closed.
//   - Until a first login succeeds, one session is dialled at a time. A
//     rejected login or host key is never tried again by this Client:
//     every later call fails with the same error (open a new Client with
//     new credentials).
//   - A server that refuses a connection for having too many (FTP 421
//     before the login) lowers the cap to the sessions it accepted; the
//     call waits for one of them instead of failing.
//
// Every call runs on pooled sessions: Upload and Download keep every
// guarantee they have without a pool (resume at a proven offset,
// verification, the atomic .part rename, at most one login per attempt,
// a rejected login never retried), and reuse a pooled session where one
// is fit instead of logging in. Methods may be called concurrently; they
// share the pool.
//
// Remote paths follow haul's rule: relative paths are relative to the
// login directory, absolute paths start with "/".
//
// Close the Client when done: it closes every session. Calls after Close
// fail with ErrClosed.
type Client struct {
	ep   Endpoint
	cfg  Config
	pool *pool

	// ctx ends, with cause ErrClosed, when Close is called: every call's
	// context derives from it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// limit paces every transfer of the Client together
	// (Config.RateLimit), or is nil.
	limit *rate.Limiter

	mu     sync.Mutex
	closed bool
	calls  sync.WaitGroup // calls in progress
}

var _ Transfer = (*Client)(nil)

// ErrClosed is matched by the error of any call made on a Client after
// its Close, and of calls that Close interrupted.
var ErrClosed = errors.New("transfer: client is closed")

// Open returns a Client for the server named by rawURL (ftp://, ftps://
// for explicit TLS, ftps+implicit://, sftp://). The URL's path, if any,
// is ignored; see Put and Get for one-shot transfers to a URL. Open
// validates the configuration but does not connect: the first call dials.
func Open(rawURL string, cfg Config) (*Client, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return open(ep, cfg)
}

func open(ep Endpoint, cfg Config) (*Client, error) {
	if ep.password == "" {
		ep.password = cfg.Password
	}
	if ep.User == "" {
		ep.User = cfg.User
	}
	if ep.User == "" && ep.Scheme != "sftp" {
		ep.User = "anonymous"
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var dial protocol.Dialer
	var err error
	switch ep.Scheme {
	case "ftp", "ftps", "ftps+implicit":
		dial, err = ftpDialer(ep, cfg)
	case "sftp":
		dial, err = sftpDialer(ep, cfg)
	default:
		err = &URLError{URL: ep.String(), Err: fmt.Errorf("%w %q", errUnsupportedScheme, ep.Scheme)}
	}
	if err != nil {
		return nil, err
	}
	return newClient(ep, cfg, dial), nil
}

// newClient returns a Client whose sessions come from dial.
func newClient(ep Endpoint, cfg Config, dial protocol.Dialer) *Client {
	c := &Client{ep: ep, cfg: cfg}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.pool = newPool(dial, cfg.maxConns(), cfg.idleTimeout(), min(checkTimeout, cfg.dialTimeout()), cfg.Logger)
	if cfg.RateLimit > 0 {
		burst := int(min(max(cfg.RateLimit/10, 32<<10), 1<<20))
		c.limit = rate.NewLimiter(rate.Limit(cfg.RateLimit), burst)
	}
	return c
}

// engine returns the engine's configuration for a transfer of the remote
// file path, sharing the Client's rate limit.
func (c *Client) engine(path string) resume.Config {
	e := c.cfg.engine(path)
	if c.limit != nil {
		e.Limiter = c.limit
	}
	return e
}

// checkTimeout bounds the health check of a pooled session before reuse
// (as the engine bounds its own check after a failure).
const checkTimeout = 5 * time.Second

// Close interrupts the calls in progress (they fail with ErrClosed), waits
// for them to return, and closes every session. It is idempotent and
// returns nil. It must not be called from a Config callback (Progress,
// OnEvent, OnNewHostKey): it would wait for the call that runs it.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	// The pool first: the calls' contexts end asynchronously (one
	// AfterFunc each), and a call whose context has not ended yet must
	// not take the slot another call's end freed and dial again.
	c.pool.close()
	c.cancel(ErrClosed)
	c.calls.Wait()
	return nil
}

// begin starts a call: its context ends when ctx does or when the Client
// is closed (cause ErrClosed). end must be called when the call returns.
func (c *Client) begin(ctx context.Context) (_ context.Context, end func(), _ error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, ErrClosed
	}
	c.calls.Add(1)
	c.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(c.ctx, func() { cancel(context.Cause(c.ctx)) })
	return ctx, func() {
		stop()
		cancel(nil)
		c.calls.Done()
	}, nil
}

// transfer runs one Upload or Download (run) as a call: it waits for a
// slot of the pool first, outside the engine, so that a wait for a busy
// pool never counts as a stalled attempt. It converts the engine's result
// and error into transfer's.
func (c *Client) transfer(ctx context.Context, op, remotePath, localPath string, run func(ctx context.Context, dial protocol.Dialer) (resume.Result, error)) (Result, error) {
	start := time.Now()
	fail := func(err error) (Result, error) {
		return Result{Op: op, Remote: remotePath, Local: localPath, Duration: time.Since(start)}, &Error{Op: op, Path: remotePath, Err: err}
	}
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer end()
	base, err := c.pool.acquire(ctx)
	if err != nil {
		return fail(err)
	}
	tc := &call{p: c.pool, base: base, out: make(map[*lease]struct{})}
	defer tc.end()
	r, err := run(ctx, tc.dial)
	res := resultOf(op, remotePath, localPath, r, start)
	if err != nil {
		err = errorOf(op, remotePath, err)
		var te *Error
		if errors.As(err, &te) {
			res.Committed = te.Committed
			if res.Attempts == 0 {
				res.Attempts = te.Attempts
			}
		}
	}
	return res, err
}

// call lends the engine the sessions of one transfer. It holds one slot
// (base) for the whole transfer, so that its attempts never wait for the
// pool; the session in it stays with the call between attempts. Sessions
// the engine asks for while base's is lent out (the ranges of a segmented
// transfer) take slots of their own without waiting (pool.acquireNow).
type call struct {
	p    *pool
	base *slot

	mu      sync.Mutex
	baseOut bool // base's session is lent out
	out     map[*lease]struct{}
	ended   bool
}

var errCallEnded = errors.New("dial after the transfer returned")

// dial is the protocol.Dialer given to the engine: one pooled session per
// call, at most one login.
func (c *call) dial(ctx context.Context) (protocol.Session, error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return nil, &protocol.Error{Op: "dial", Err: errCallEnded}
	}
	extra := c.baseOut
	c.baseOut = true
	c.mu.Unlock()
	sl := c.base
	if extra {
		var err error
		if sl, err = c.p.acquireNow(); err != nil {
			return nil, &protocol.Error{Op: "dial", Err: err}
		}
	}
	s, err := c.p.sessionFor(ctx, sl, false, true) // see recentUse
	if err != nil {
		if extra {
			c.p.put(sl, false)
		} else {
			c.mu.Lock()
			c.baseOut = false
			c.mu.Unlock()
		}
		return nil, err
	}
	l := &lease{s: s}
	l.back = func(s protocol.Session, fit bool) {
		if extra {
			c.p.put(sl, fit)
		} else if !fit {
			_ = s.Close()
			sl.s = nil // the slot stays with the call, empty
		}
		c.mu.Lock()
		delete(c.out, l)
		if !extra {
			c.baseOut = false
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.out[l] = struct{}{}
	c.mu.Unlock()
	return wrapLease(l), nil
}

// end closes any session the engine did not close, and hands base back.
func (c *call) end() {
	c.mu.Lock()
	c.ended = true
	var left []*lease
	for l := range c.out {
		left = append(left, l)
	}
	c.mu.Unlock()
	for _, l := range left {
		c.p.log.Warn("transfer: a session was not closed by the engine; closing it")
		l.abandon()
	}
	c.p.put(c.base, true)
}
