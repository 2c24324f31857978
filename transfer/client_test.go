package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openhaul/haul/protocol"
)

// testClient returns a Client of srv's sessions, closed at the end of the
// test.
func testClient(t *testing.T, srv *fakeServer, cfg Config) *Client {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.InitialBackoff == 0 {
		cfg.InitialBackoff, cfg.MaxBackoff = time.Millisecond, 2*time.Millisecond
	}
	c := newClient(Endpoint{Scheme: "ftp", Host: "fake.invalid", Port: "21", User: "u"}, cfg, srv.dial)
	t.Cleanup(func() { c.Close() })
	return c
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// localFile writes b to a new file and returns its path.
func localFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClientSequentialUploadsOneDial: 20 uploads in a row through one
// Client log in once, on FTP-like (NOOP) and SFTP-like (Stat) sessions;
// each reuse of a session idle for recentUse or more is health-checked
// first, and one handed back just now is not.
func TestClientSequentialUploadsOneDial(t *testing.T) {
	for _, checker := range []bool{true, false} {
		// time.Hour: every hand-back is recent, however slow the machine.
		for _, recent := range []time.Duration{0, time.Hour} {
			t.Run(fmt.Sprintf("checker=%v/recentUse=%v", checker, recent), func(t *testing.T) {
				testSequentialUploads(t, checker, recent)
			})
		}
	}
}

func testSequentialUploads(t *testing.T, checker bool, recent time.Duration) {
	srv := newFakeServer()
	srv.checker = checker
	c := testClient(t, srv, Config{})
	c.pool.recentUse = recent
	for i := range 20 {
		src := randomBytes(uint64(i), 10_000+i)
		name := fmt.Sprintf("f%d.bin", i)
		res, err := c.Upload(context.Background(), localFile(t, src), name)
		if err != nil {
			t.Fatal(err)
		}
		if res.Attempts != 1 || !bytes.Equal(srv.file(name), src) {
			t.Fatalf("upload %d: %+v, content equal %v", i, res, bytes.Equal(srv.file(name), src))
		}
	}
	dials, live, _ := srv.stats()
	if dials != 1 || live != 1 {
		t.Fatalf("dials = %d, live = %d, want 1 and 1", dials, live)
	}
	if n := srv.checks.Load(); recent == 0 && n < 19 || recent > 0 && n != 0 {
		t.Fatalf("%d health checks for 19 reuses with recentUse %v", n, recent)
	}
	c.Close()
	if _, live, _ := srv.stats(); live != 0 {
		t.Fatalf("%d sessions left open after Close", live)
	}
}

// TestClientMaxConnsCap: 8 uploads at once with MaxConns 3 never hold
// more than 3 sessions; a call that finds all 3 in use waits, and gives
// up when its context ends.
func TestClientMaxConnsCap(t *testing.T) {
	srv := newFakeServer()
	srv.checker = true
	srv.gate, srv.entered = make(chan struct{}), make(chan struct{}, 64)
	c := testClient(t, srv, Config{MaxConns: 3})
	src := localFile(t, randomBytes(1, 50_000))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := c.Upload(context.Background(), src, fmt.Sprintf("f%d", i))
			errs <- err
		})
	}
	for range 3 {
		<-srv.entered // three uploads hold the three sessions
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := c.Stat(ctx, "f0")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 2*time.Second {
		t.Fatalf("Stat while the pool is full: %v after %v, want the deadline", err, time.Since(began))
	}
	if dials, live, _ := srv.stats(); dials != 3 || live != 3 {
		t.Fatalf("dials %d, live %d while full, want 3 and 3", dials, live)
	}
	close(srv.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	dials, live, maxLive := srv.stats()
	if maxLive > 3 || dials > 3 || live > 3 {
		t.Fatalf("dials %d, live %d, at most %d at once: want at most 3", dials, live, maxLive)
	}
}

// TestClientBrokenSessionNotReused: a session that fails its health
// check, or on which a call failed, is closed, never handed out again.
func TestClientBrokenSessionNotReused(t *testing.T) {
	ctx := context.Background()
	src := randomBytes(2, 40_000)

	t.Run("failed health check", func(t *testing.T) {
		srv := newFakeServer()
		srv.checker = true
		c := testClient(t, srv, Config{})
		c.pool.recentUse = 0 // every reuse is checked
		if _, err := c.Upload(ctx, localFile(t, src), "a"); err != nil {
			t.Fatal(err)
		}
		srv.kill() // the idle session dies (a server restart)
		res, err := c.Upload(ctx, localFile(t, src), "b")
		if err != nil || res.Attempts != 1 {
			t.Fatalf("%+v, %v", res, err)
		}
		if dials, live, _ := srv.stats(); dials != 2 || live != 1 || !srv.sessions[0].isClosed() {
			t.Fatalf("dials %d live %d first closed %v: want a new session, the dead one closed", dials, live, srv.sessions[0].isClosed())
		}
	})

	t.Run("died just after use", func(t *testing.T) {
		// Reused unchecked (handed back within recentUse): the failed
		// attempt is retried on a new session, as after any cut.
		srv := newFakeServer()
		srv.checker = true
		c := testClient(t, srv, Config{})
		c.pool.recentUse = time.Hour // recent, however slow the machine
		if _, err := c.Upload(ctx, localFile(t, src), "a"); err != nil {
			t.Fatal(err)
		}
		srv.kill()
		res, err := c.Upload(ctx, localFile(t, src), "b")
		if err != nil || res.Attempts != 2 || !bytes.Equal(srv.file("b"), src) {
			t.Fatalf("%+v, %v", res, err)
		}
		if dials, live, _ := srv.stats(); dials != 2 || live != 1 || !srv.sessions[0].isClosed() {
			t.Fatalf("dials %d live %d", dials, live)
		}
	})

	t.Run("failed write, no Checker", func(t *testing.T) {
		srv := newFakeServer()
		srv.failWrites = 1
		c := testClient(t, srv, Config{})
		res, err := c.Upload(ctx, localFile(t, src), "a")
		if err != nil || res.Attempts != 2 || !bytes.Equal(srv.file("a"), src) {
			t.Fatalf("%+v, %v", res, err)
		}
		if dials, live, _ := srv.stats(); dials != 2 || live != 1 || !srv.sessions[0].isClosed() {
			t.Fatalf("dials %d live %d: the session of the failed write must be closed", dials, live)
		}
	})

	t.Run("failed write, NOOP answers", func(t *testing.T) {
		// The engine reuses a session whose Check passes after a failure
		// (no new login); it is then fit for the pool too.
		srv := newFakeServer()
		srv.checker = true
		srv.failWrites = 1
		c := testClient(t, srv, Config{})
		res, err := c.Upload(ctx, localFile(t, src), "a")
		if err != nil || res.Attempts != 2 {
			t.Fatalf("%+v, %v", res, err)
		}
		if _, err := c.Stat(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if dials, live, _ := srv.stats(); dials != 1 || live != 1 {
			t.Fatalf("dials %d live %d, want the checked session kept", dials, live)
		}
	})

	t.Run("remote call", func(t *testing.T) {
		srv := newFakeServer()
		srv.put("x", src)
		c := testClient(t, srv, Config{})
		if _, err := c.Stat(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
		srv.failStats = 1
		// The session, handed back just now, is used without a check:
		// its failure makes the Stat again on a new session.
		if fi, err := c.Stat(ctx, "x"); err != nil || fi.Size != int64(len(src)) {
			t.Fatalf("%+v, %v", fi, err)
		}
		// "No such file" is an answer: the session stayed; the failed
		// Stat's session was closed.
		if dials, live, _ := srv.stats(); dials != 2 || live != 1 || !srv.sessions[0].isClosed() {
			t.Fatalf("dials %d live %d", dials, live)
		}
		// A checked session that fails: the error is the caller's.
		c.pool.recentUse = 0
		srv.failStats = 1
		if _, err := c.Stat(ctx, "x"); !errors.Is(err, protocol.ErrTransient) {
			t.Fatalf("err = %v", err)
		}
		if dials, live, _ := srv.stats(); dials != 2 || live != 0 || !srv.sessions[1].isClosed() {
			t.Fatalf("dials %d live %d", dials, live)
		}
	})
}

// TestClientIdleExpiry: a session idle for IdleTimeout is closed; the
// next call dials again.
func TestClientIdleExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer()
		srv.put("x", []byte("x"))
		c := newClient(Endpoint{Scheme: "sftp", Host: "fake.invalid", Port: "22", User: "u"}, Config{IdleTimeout: 10 * time.Second}, srv.dial)
		defer c.Close()
		if _, err := c.Stat(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if _, live, _ := srv.stats(); live != 1 {
			t.Fatalf("closed after 9 s of 10")
		}
		if _, err := c.Stat(context.Background(), "x"); err != nil { // used again: the clock restarts
			t.Fatal(err)
		}
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if dials, live, _ := srv.stats(); dials != 1 || live != 1 {
			t.Fatalf("dials %d live %d after a reuse and 9 s", dials, live)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if _, live, _ := srv.stats(); live != 0 {
			t.Fatalf("still open after 11 s idle")
		}
		if _, err := c.Stat(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
		if dials, _, _ := srv.stats(); dials != 2 {
			t.Fatalf("dials %d, want a new one after the expiry", dials)
		}
	})
}

// TestClientNegativeIdleTimeoutKeepsNone: IdleTimeout < 0 closes each
// session when its call returns.
func TestClientNegativeIdleTimeoutKeepsNone(t *testing.T) {
	srv := newFakeServer()
	srv.put("x", []byte("x"))
	c := testClient(t, srv, Config{IdleTimeout: -1})
	for range 3 {
		if _, err := c.Stat(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
	}
	if dials, live, _ := srv.stats(); dials != 3 || live != 0 {
		t.Fatalf("dials %d live %d", dials, live)
	}
}

// TestClientClose: Close closes every session, interrupts the calls in
// progress and those waiting for a session, is idempotent, and every
// later call fails with ErrClosed.
func TestClientClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer()
		srv.checker = true
		srv.gate, srv.entered = make(chan struct{}), make(chan struct{}, 8)
		cfg := Config{MaxConns: 1, StateDir: t.TempDir()}
		c := newClient(Endpoint{Scheme: "ftp", Host: "fake.invalid", Port: "21", User: "u"}, cfg, srv.dial)
		src := localFile(t, randomBytes(3, 20_000))
		upErr, statErr := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := c.Upload(context.Background(), src, "a")
			upErr <- err
		}()
		<-srv.entered // the upload holds the only session
		go func() {
			_, err := c.Stat(context.Background(), "a")
			statErr <- err
		}()
		synctest.Wait() // the Stat waits for the session
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, live, _ := srv.stats(); live != 0 {
			t.Fatalf("%d sessions open after Close", live)
		}
		for name, ch := range map[string]chan error{"upload": upErr, "stat": statErr} {
			if err := <-ch; !errors.Is(err, ErrClosed) {
				t.Errorf("%s interrupted by Close: %v, want ErrClosed", name, err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		ctx := context.Background()
		_, uerr := c.Upload(ctx, src, "b")
		_, derr := c.Download(ctx, "a", filepath.Join(t.TempDir(), "a"))
		_, serr := c.Stat(ctx, "a")
		_, rerr := c.ReadDir(ctx, "")
		for i, err := range []error{uerr, derr, serr, rerr, c.MkdirAll(ctx, "d"), c.Remove(ctx, "a"), c.Rename(ctx, "a", "b"),
			c.Walk(ctx, "", func(string, DirEntry, error) error { return nil })} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call %d after Close: %v, want ErrClosed", i, err)
			}
		}
		if dials, _, _ := srv.stats(); dials != 1 {
			t.Fatalf("dials %d after Close", dials)
		}
	})
}

// TestClientDialErrorSurfacesAsIs: the dialer's error (a rejected login)
// is what the caller gets, after one dial, never retried: not by the
// call, and not by the Client's later calls either.
func TestClientDialErrorSurfacesAsIs(t *testing.T) {
	srv := newFakeServer()
	dialErr := &protocol.Error{Op: "login", Code: 530, Kind: protocol.ErrAuth, Err: errors.New("Login incorrect.")}
	srv.dialErr = dialErr
	c := testClient(t, srv, Config{})
	res, err := c.Upload(context.Background(), localFile(t, []byte("data")), "a")
	var terr *Error
	if !errors.Is(err, ErrAuth) || !errors.Is(err, dialErr) || !errors.As(err, &terr) || terr.Attempts != 1 || res.Attempts != 1 {
		t.Fatalf("err = %v (%+v)", err, res)
	}
	if _, err := c.Stat(context.Background(), "a"); err != dialErr {
		t.Fatalf("Stat: %v, want the dial error itself", err)
	}
	if dials, live, _ := srv.stats(); dials != 1 || live != 0 {
		t.Fatalf("dials %d live %d", dials, live)
	}
}

// TestClientSegmentedTransfersDoNotDeadlock: a segmented download needs
// several sessions at once; it gets them beyond MaxConns rather than wait
// for a slot while it holds one (which would deadlock), alone and with a
// second one beside it. synctest fails the test if the goroutines block
// for good.
func TestClientSegmentedTransfersDoNotDeadlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer()
		srv.checker = true
		src := randomBytes(4, 256<<10)
		srv.put("big", src)
		for _, maxConns := range []int{1, 2} {
			cfg := Config{MaxConns: maxConns, Segments: 4, MinSegmentSize: 16 << 10, StateDir: t.TempDir()}
			c := newClient(Endpoint{Scheme: "ftp", Host: "fake.invalid", Port: "21", User: "u"}, cfg, srv.dial)
			dir := t.TempDir()
			var wg sync.WaitGroup
			for i := range maxConns {
				wg.Go(func() {
					dst := filepath.Join(dir, fmt.Sprint(i))
					res, err := c.Download(context.Background(), "big", dst)
					got, _ := os.ReadFile(dst)
					if err != nil || res.Segments != 4 || !bytes.Equal(got, src) {
						t.Errorf("MaxConns %d download %d: %+v, %v", maxConns, i, res, err)
					}
				})
			}
			wg.Wait()
			c.Close()
			if _, live, _ := srv.stats(); live != 0 {
				t.Fatalf("%d sessions open after Close", live)
			}
		}
	})
}

// TestClientNoGoroutineLeak: uploads, downloads and remote calls, some at
// once, then Close: no goroutine is left.
func TestClientNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		srv := newFakeServer()
		srv.checker = true
		c := testClient(t, srv, Config{MaxConns: 2})
		src := randomBytes(5, 100_000)
		p := localFile(t, src)
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				name := fmt.Sprint("f", i)
				if _, err := c.Upload(context.Background(), p, name); err != nil {
					t.Error(err)
				}
				if _, err := c.Download(context.Background(), name, filepath.Join(t.TempDir(), "x")); err != nil {
					t.Error(err)
				}
				if _, err := c.ReadDir(context.Background(), ""); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		c.Close()
	}()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestClientRemoteOps: MkdirAll, ReadDir, Walk, Rename, Remove and Stat
// on one pooled session.
func TestClientRemoteOps(t *testing.T) {
	ctx := context.Background()
	srv := newFakeServer()
	srv.checker = true
	c := testClient(t, srv, Config{})

	if err := c.MkdirAll(ctx, "a/b/c/"); err != nil {
		t.Fatal(err)
	}
	if err := c.MkdirAll(ctx, "a/b/c"); err != nil {
		t.Fatalf("existing: %v", err)
	}
	srv.put("a/b/f2", []byte("22"))
	srv.put("a/b/f1", []byte("1"))
	srv.put("a/z", []byte("zzz"))
	if err := c.MkdirAll(ctx, "a/b/f1/d"); !errors.Is(err, ErrInvalidPath) {
		t.Fatalf("MkdirAll under a file: %v", err)
	}
	ents, err := c.ReadDir(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ents); got != fmt.Sprint([]DirEntry{
		{Name: "c", FileInfo: FileInfo{IsDir: true}},
		{Name: "f1", FileInfo: FileInfo{Size: 1}},
		{Name: "f2", FileInfo: FileInfo{Size: 2}},
	}) {
		t.Fatalf("ReadDir = %v", got)
	}
	if _, err := c.ReadDir(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir of a missing dir: %v", err)
	}

	var walked []string
	err = c.Walk(ctx, "", func(p string, d DirEntry, err error) error {
		if err != nil {
			return err
		}
		walked = append(walked, fmt.Sprintf("%s:%v", p, d.IsDir))
		if p == "a/b/c" {
			return fs.SkipDir
		}
		return nil
	})
	if want := "[:true a:true a/b:true a/b/c:true a/b/f1:false a/b/f2:false a/z:false]"; err != nil || fmt.Sprint(walked) != want {
		t.Fatalf("Walk: %v, %v\nwant %s", walked, err, want)
	}
	walked = nil
	err = c.Walk(ctx, "a", func(p string, d DirEntry, err error) error {
		walked = append(walked, p)
		if p == "a/b/f1" {
			return fs.SkipDir // the rest of a/b
		}
		return nil
	})
	if want := "[a a/b a/b/c a/b/f1 a/z]"; err != nil || fmt.Sprint(walked) != want {
		t.Fatalf("Walk with SkipDir on a file: %v, %v", walked, err)
	}
	var rootErr error
	if err := c.Walk(ctx, "missing", func(p string, d DirEntry, err error) error { rootErr = err; return err }); !errors.Is(err, fs.ErrNotExist) || !errors.Is(rootErr, fs.ErrNotExist) {
		t.Fatalf("Walk of a missing root: %v", err)
	}

	if err := c.Rename(ctx, "a/z", "a/b/c/z"); err != nil {
		t.Fatal(err)
	}
	if fi, err := c.Stat(ctx, "a/b/c/z"); err != nil || fi.Size != 3 || fi.IsDir {
		t.Fatalf("Stat after Rename: %+v, %v", fi, err)
	}
	if err := c.Remove(ctx, "a/b/c/z"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "a/b/c/z"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat after Remove: %v", err)
	}
	if err := c.Remove(ctx, "a/b/c/z"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove of a missing file: %v", err)
	}
	if fi, err := c.Stat(ctx, ""); err != nil || !fi.IsDir {
		t.Fatalf("Stat of the login directory: %+v, %v", fi, err)
	}
	if err := c.Remove(ctx, "bad\r\nDELE x"); !errors.Is(err, ErrInvalidPath) {
		t.Fatalf("Remove of a bad path: %v", err)
	}
	if dials, _, _ := srv.stats(); dials != 1 {
		t.Fatalf("dials %d, want 1", dials)
	}
}

// TestClientWalkDepthBound: a tree deeper than MaxWalkDepth is reported,
// not descended.
func TestClientWalkDepthBound(t *testing.T) {
	srv := newFakeServer()
	c := testClient(t, srv, Config{})
	p := "d"
	for range MaxWalkDepth + 5 {
		srv.dirs[p] = true
		p += "/d"
	}
	deepest, tooDeep := 0, 0
	err := c.Walk(context.Background(), "d", func(p string, d DirEntry, err error) error {
		if errors.Is(err, ErrTooDeep) {
			tooDeep++
			return nil
		}
		deepest = max(deepest, len(p)/2+1)
		return err
	})
	if err != nil || tooDeep != 1 || deepest != MaxWalkDepth+1 {
		t.Fatalf("err %v, %d too deep, deepest level %d", err, tooDeep, deepest)
	}
}

// TestClientRemoteOpsUnsupported: a session without DirReader/DirMaker
// answers ErrUnsupported, except for a directory that exists already.
func TestClientRemoteOpsUnsupported(t *testing.T) {
	ctx := context.Background()
	srv := newFakeServer()
	srv.noDirs = true
	srv.dirs["have"] = true
	c := testClient(t, srv, Config{})
	if _, err := c.ReadDir(ctx, ""); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("ReadDir: %v", err)
	}
	if err := c.MkdirAll(ctx, "have"); err != nil {
		t.Fatalf("MkdirAll of an existing directory: %v", err)
	}
	if err := c.MkdirAll(ctx, "new/sub"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("MkdirAll: %v", err)
	}
	// Answers, not failures: the session is still the first one.
	if dials, live, _ := srv.stats(); dials != 1 || live != 1 {
		t.Fatalf("dials %d live %d", dials, live)
	}
}

// TestOpenRefusesNegativeMaxConns: a setting that means nothing.
func TestOpenRefusesNegativeMaxConns(t *testing.T) {
	if _, err := Open("ftp://u@127.0.0.1:1", Config{MaxConns: -1}); err == nil {
		t.Fatal("no error")
	}
}
