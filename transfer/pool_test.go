package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openhaul/haul/protocol"
)

func testPool(srv *fakeServer, maxConns int) *pool {
	return newPool(srv.dial, maxConns, time.Minute, time.Second, nil)
}

// TestPoolAcquireNowGoesBeyondTheCap: a user that holds a slot gets
// another at once even when none is free; that one's session is closed,
// not kept, when it comes back while the pool is over its cap.
func TestPoolAcquireNowGoesBeyondTheCap(t *testing.T) {
	ctx := context.Background()
	srv := newFakeServer()
	p := testPool(srv, 1)
	defer p.close()
	a, err := p.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.session(ctx, a); err != nil {
		t.Fatal(err)
	}
	b, err := p.acquireNow()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.session(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, live, _ := srv.stats(); live != 2 {
		t.Fatalf("live %d, want 2 (one beyond the cap)", live)
	}
	p.put(b, true) // over the cap: closed
	if _, live, _ := srv.stats(); live != 1 || !srv.sessions[1].isClosed() {
		t.Fatalf("live %d, want the extra session closed", live)
	}
	p.put(a, true) // within the cap: kept
	if _, live, _ := srv.stats(); live != 1 || srv.sessions[0].isClosed() {
		t.Fatalf("live %d, want the first session kept idle", live)
	}
	c, err := p.acquire(ctx)
	if err != nil || c.s == nil {
		t.Fatalf("acquire after put: %v, session %v", err, c.s)
	}
	p.put(c, false) // unfit: closed
	if _, live, _ := srv.stats(); live != 0 {
		t.Fatalf("live %d after an unfit put", live)
	}
}

// TestPoolReusesTheMostRecent: with several idle sessions, the one used
// last is handed out first (the others then expire).
func TestPoolReusesTheMostRecent(t *testing.T) {
	ctx := context.Background()
	srv := newFakeServer()
	p := testPool(srv, 3)
	defer p.close()
	var slots []*slot
	for range 3 {
		sl, err := p.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.session(ctx, sl); err != nil {
			t.Fatal(err)
		}
		slots = append(slots, sl)
	}
	last := slots[2].s
	for _, sl := range slots {
		p.put(sl, true)
	}
	sl, err := p.acquire(ctx)
	if err != nil || sl.s != last {
		t.Fatalf("got %v, want the last one put back", sl.s)
	}
	p.put(sl, true)
}

// TestPoolWaitHonoursContext: acquire on a full pool returns the
// context's cause when it ends, and a slot when one frees.
func TestPoolWaitHonoursContext(t *testing.T) {
	srv := newFakeServer()
	p := testPool(srv, 1)
	defer p.close()
	held, _ := p.acquire(context.Background())
	cause := errors.New("gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel(cause) }()
	if _, err := p.acquire(ctx); err != cause {
		t.Fatalf("err = %v, want the cause", err)
	}
	done := make(chan *slot)
	go func() {
		sl, _ := p.acquire(context.Background())
		done <- sl
	}()
	p.put(held, true)
	if sl := <-done; sl == nil {
		t.Fatal("no slot after one freed")
	}
	p.close()
	if _, err := p.acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

// TestLeaseKeepsCapabilities: a lease offers the engine exactly the
// capabilities it acts on by their presence, and keeps its streams' fast
// paths.
func TestLeaseKeepsCapabilities(t *testing.T) {
	srv := newFakeServer()
	base := &fakeSession{srv: srv}
	type rw struct {
		*fakeSession
		protocol.RangeWriter
	}
	type unconfirmed struct {
		rw
		protocol.UnconfirmedRangeWriter
	}
	for _, c := range []struct {
		s                     protocol.Session
		checker, ranges, unco bool
	}{
		{base, false, false, false},
		{checkerSession{base}, true, false, false},
		{rw{fakeSession: base}, false, true, false},
		{unconfirmed{rw: rw{fakeSession: base}}, false, true, true},
	} {
		l := wrapLease(&lease{s: c.s, back: func(protocol.Session, bool) {}})
		_, chk := l.(protocol.Checker)
		_, ranges := l.(protocol.RangeWriter)
		_, unco := l.(protocol.UnconfirmedRangeWriter)
		if chk != c.checker || ranges != c.ranges || unco != c.unco {
			t.Errorf("%T: checker %v ranges %v unconfirmed %v", c.s, chk, ranges, unco)
		}
		if _, ok := l.(protocol.RangeReader); !ok {
			t.Errorf("%T: no RangeReader", c.s)
		}
	}

	l := &lease{s: base, back: func(protocol.Session, bool) {}}
	type fromWriter struct {
		protocol.Writer
		io.ReaderFrom
	}
	type seqWriter struct {
		protocol.Writer
		seqMark
	}
	fw := &fakeWriter{f: base, ctx: context.Background()}
	if _, ok := l.writer(context.Background(), fromWriter{Writer: fw}).(io.ReaderFrom); !ok {
		t.Error("writer lost ReaderFrom")
	}
	if _, ok := l.writer(context.Background(), seqWriter{Writer: fw}).(protocol.SequentialWriter); !ok {
		t.Error("writer lost SequentialWriter")
	}
	if _, ok := l.writer(context.Background(), fw).(io.ReaderFrom); ok {
		t.Error("writer gained ReaderFrom")
	}
	if _, ok := l.reader(context.Background(), io.NopCloser(strings.NewReader("x"))).(io.WriterTo); !ok {
		t.Error("reader lost WriterTo") // io.NopCloser keeps strings.Reader's WriteTo
	}
}

type seqMark struct{}

func (seqMark) Sequential() {}

// TestLeaseFitness: what makes a lease go back to the pool or be closed.
func TestLeaseFitness(t *testing.T) {
	srv := newFakeServer()
	srv.put("f", []byte("data"))
	ctx := context.Background()
	for _, c := range []struct {
		name string
		use  func(l protocol.Session) error
		fit  bool
	}{
		{"nothing", func(protocol.Session) error { return nil }, true},
		{"not found is an answer", func(l protocol.Session) error {
			if _, err := l.Stat(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("Stat: %v", err)
			}
			return nil
		}, true},
		{"reader left open", func(l protocol.Session) error { _, err := l.OpenReader(ctx, "f", 0); return err }, false},
		{"reader closed", func(l protocol.Session) error {
			rd, err := l.OpenReader(ctx, "f", 0)
			if err == nil {
				_, _ = io.ReadAll(rd)
				err = rd.Close()
			}
			return err
		}, true},
		{"cancelled context", func(l protocol.Session) error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, _ = l.Stat(cctx, "f")
			return nil
		}, false},
		{"transient failure", func(l protocol.Session) error {
			srv.failStats = 1
			_, _ = l.Stat(ctx, "f")
			return nil
		}, false},
		{"transient failure, then Check passes", func(l protocol.Session) error {
			srv.failStats = 1
			_, _ = l.Stat(ctx, "f")
			return l.(protocol.Checker).Check(ctx)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got, called bool
			l := wrapLease(&lease{s: checkerSession{&fakeSession{srv: srv}}, back: func(_ protocol.Session, fit bool) { got, called = fit, true }})
			if err := c.use(l); err != nil {
				t.Fatal(err)
			}
			_ = l.Close()
			if !called || got != c.fit {
				t.Fatalf("handed back %v, fit %v; want fit %v", called, got, c.fit)
			}
			if _, err := l.Stat(ctx, "f"); err == nil {
				t.Fatal("a closed lease still works")
			}
		})
	}
}

// TestPoolShortCallsShareASession: quick calls made at once (a batch's
// rerun checking its files) wait for the one session rather than each
// logging in.
func TestPoolShortCallsShareASession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer()
		srv.put("x", []byte("data"))
		c := testClient(t, srv, Config{MaxConns: 8})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					if _, err := c.Stat(context.Background(), "x"); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if dials, _, _ := srv.stats(); dials != 1 {
			t.Fatalf("%d dials for 160 quick Stats, want 1", dials)
		}
	})
}

// TestPoolShortCallsDialPastALogin: a call that holds the session longer
// than a login takes (a distant server) makes the others dial their own.
func TestPoolShortCallsDialPastALogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer()
		srv.put("x", []byte("data"))
		c := testClient(t, srv, Config{MaxConns: 8})
		if _, err := c.Stat(context.Background(), "x"); err != nil { // the first login
			t.Fatal(err)
		}
		srv.statGate, srv.statEntered = make(chan struct{}), make(chan struct{}, 8)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if _, err := c.Stat(context.Background(), "x"); err != nil {
					t.Error(err)
				}
			})
		}
		for range 4 {
			<-srv.statEntered // each Stat reached a session: 3 dialled their own
		}
		close(srv.statGate)
		wg.Wait()
		if dials, _, _ := srv.stats(); dials != 4 {
			t.Fatalf("%d dials, want 4: one session per Stat held past a login's time", dials)
		}
	})
}
