package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openhaul/haul/protocol"
)

// fakeServer is an in-memory remote file system whose sessions count
// themselves, for unit tests of the Client's pool. Real servers are
// exercised in integration/client_test.go.
type fakeServer struct {
	mu    sync.Mutex
	files map[string][]byte // by cleaned path
	dirs  map[string]bool   // by cleaned path; "." is the login directory

	dials, live, maxLive int
	refused              int // dials refused by connLimit
	sessions             []*fakeSession

	// dialErr, when set, is returned by every dial.
	dialErr error
	// connLimit, when set, refuses a dial while that many sessions are
	// open, as vsftpd's max_per_ip does (421).
	connLimit int
	// busyDials refuses that many next dials with 421, as a server whose
	// connections other clients hold.
	busyDials int
	// checker makes sessions implement protocol.Checker (FTP-like);
	// without it the pool checks with Stat(".") (SFTP-like).
	checker bool
	// noDirs hides DirReader and DirMaker.
	noDirs bool
	// failWrites makes that many next writes fail transiently.
	failWrites int
	// failStats makes that many next Stats fail transiently.
	failStats int
	// gate, when set, makes writers' Close wait for it (or their ctx);
	// each sends on entered first.
	gate    chan struct{}
	entered chan struct{}
	// checks counts health checks (Check, or Stat of ".").
	checks atomic.Int64
	// statGate, when set, makes a Stat of another path than "." wait
	// for it (or its ctx); each sends on statEntered first.
	statGate    chan struct{}
	statEntered chan struct{}
}

func newFakeServer() *fakeServer {
	return &fakeServer{files: map[string][]byte{}, dirs: map[string]bool{".": true}}
}

var errFakeCut = &protocol.Error{Op: "fake", Kind: protocol.ErrTransient, Code: 426, Err: errors.New("connection reset")}

func (s *fakeServer) dial(ctx context.Context) (protocol.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, &protocol.Error{Op: "dial", Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dials++
	if s.dialErr != nil {
		return nil, s.dialErr
	}
	if s.connLimit > 0 && s.live >= s.connLimit || s.busyDials > 0 {
		s.busyDials = max(s.busyDials-1, 0)
		s.refused++
		return nil, &protocol.Error{Op: "dial", Code: 421, Kind: protocol.ErrTooManyConns, Err: errors.New("421 There are too many connections from your internet address.")}
	}
	s.live++
	s.maxLive = max(s.maxLive, s.live)
	sess := &fakeSession{srv: s, id: s.dials}
	s.sessions = append(s.sessions, sess)
	switch {
	case s.checker && s.noDirs:
		return checkerOnly{plainSession{sess}, sess}, nil
	case s.checker:
		return checkerSession{sess}, nil
	case s.noDirs:
		return plainSession{sess}, nil
	}
	return sess, nil
}

func (s *fakeServer) stats() (dials, live, maxLive int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials, s.live, s.maxLive
}

// kill makes every session fail its next calls, as after a server
// restart.
func (s *fakeServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		sess.dead = true
	}
}

func (s *fakeServer) put(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path.Clean(name)] = bytes.Clone(b)
}

func (s *fakeServer) file(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.files[path.Clean(name)])
}

type fakeSession struct {
	srv    *fakeServer
	id     int
	dead   bool // guarded by srv.mu
	closed bool // guarded by srv.mu
}

type plainSession struct{ protocol.Session }
type checkerSession struct{ *fakeSession }
type checkerOnly struct {
	plainSession
	fs *fakeSession
}

func (c checkerSession) Check(ctx context.Context) error { return c.check(ctx) }
func (c checkerOnly) Check(ctx context.Context) error    { return c.fs.check(ctx) }

func (f *fakeSession) check(ctx context.Context) error {
	f.srv.checks.Add(1)
	return f.begin(ctx, "check", "")
}

// begin fails a call on a closed or dead session, or after ctx ended.
func (f *fakeSession) begin(ctx context.Context, op, p string) error {
	if err := ctx.Err(); err != nil {
		return &protocol.Error{Op: op, Path: p, Err: err}
	}
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	if f.closed {
		return &protocol.Error{Op: op, Path: p, Kind: protocol.ErrTransient, Err: errors.New("fake session closed")}
	}
	if f.dead {
		return &protocol.Error{Op: op, Path: p, Kind: protocol.ErrTransient, Err: io.EOF}
	}
	return nil
}

func (f *fakeSession) isClosed() bool {
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	return f.closed
}

func notExist(op, p string) error {
	return &protocol.Error{Op: op, Path: p, Code: 550, Kind: fs.ErrNotExist, Err: errors.New("no such file")}
}

func (f *fakeSession) Stat(ctx context.Context, p string) (protocol.FileInfo, error) {
	if p == "." {
		f.srv.checks.Add(1)
	}
	if err := f.begin(ctx, "stat", p); err != nil {
		return protocol.FileInfo{}, err
	}
	s := f.srv
	if gate := s.statGate; gate != nil && p != "." {
		s.statEntered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return protocol.FileInfo{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failStats > 0 && p != "." {
		s.failStats--
		return protocol.FileInfo{}, errFakeCut
	}
	c := path.Clean(p)
	if s.dirs[c] {
		return protocol.FileInfo{IsDir: true}, nil
	}
	b, ok := s.files[c]
	if !ok {
		return protocol.FileInfo{}, notExist("stat", p)
	}
	return protocol.FileInfo{Size: int64(len(b)), ModTime: time.Unix(1_700_000_000, 0)}, nil
}

func (f *fakeSession) OpenReader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := f.begin(ctx, "read", p); err != nil {
		return nil, err
	}
	b := f.srv.file(p)
	if b == nil {
		return nil, notExist("read", p)
	}
	if offset > int64(len(b)) {
		offset = int64(len(b))
	}
	return io.NopCloser(bytes.NewReader(b[offset:])), nil
}

func (f *fakeSession) OpenWriter(ctx context.Context, p string, offset int64) (protocol.Writer, error) {
	if err := f.begin(ctx, "write", p); err != nil {
		return nil, err
	}
	s := f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	c := path.Clean(p)
	if !s.dirs[path.Dir(c)] {
		return nil, notExist("write", p)
	}
	b := s.files[c]
	if offset > int64(len(b)) {
		return nil, &protocol.Error{Op: "write", Path: p, Err: errors.New("offset past the end")}
	}
	s.files[c] = b[:offset:offset]
	return &fakeWriter{f: f, ctx: ctx, path: c}, nil
}

type fakeWriter struct {
	f     *fakeSession
	ctx   context.Context
	path  string
	acked atomic.Int64
}

func (w *fakeWriter) Write(p []byte) (int, error) {
	if err := w.f.begin(w.ctx, "write", w.path); err != nil {
		return 0, err
	}
	s := w.f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWrites > 0 {
		s.failWrites--
		return 0, errFakeCut
	}
	s.files[w.path] = append(s.files[w.path], p...)
	w.acked.Add(int64(len(p)))
	return len(p), nil
}

func (w *fakeWriter) Close() error {
	s := w.f.srv
	s.mu.Lock()
	gate, entered := s.gate, s.entered
	s.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-w.ctx.Done():
			return &protocol.Error{Op: "write", Path: w.path, Err: w.ctx.Err()}
		}
	}
	return w.f.begin(w.ctx, "write", w.path)
}

func (w *fakeWriter) Acked() int64 { return w.acked.Load() }

func (f *fakeSession) Rename(ctx context.Context, from, to string) error {
	if err := f.begin(ctx, "rename", from); err != nil {
		return err
	}
	s := f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := path.Clean(from), path.Clean(to)
	switch {
	case s.files[a] != nil:
		s.files[b] = s.files[a]
		delete(s.files, a)
	case s.dirs[a]:
		for d := range s.dirs {
			if d == a || strings.HasPrefix(d, a+"/") {
				delete(s.dirs, d)
				s.dirs[b+strings.TrimPrefix(d, a)] = true
			}
		}
	default:
		return notExist("rename", from)
	}
	return nil
}

func (f *fakeSession) Remove(ctx context.Context, p string) error {
	if err := f.begin(ctx, "remove", p); err != nil {
		return err
	}
	s := f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files[path.Clean(p)]; !ok {
		return notExist("remove", p)
	}
	delete(s.files, path.Clean(p))
	return nil
}

func (f *fakeSession) ReadDir(ctx context.Context, p string) ([]protocol.DirEntry, error) {
	if err := f.begin(ctx, "readdir", p); err != nil {
		return nil, err
	}
	s := f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	c := path.Clean(p)
	if !s.dirs[c] {
		if s.files[c] != nil {
			return nil, &protocol.Error{Op: "readdir", Path: p, Kind: protocol.ErrInvalidPath, Err: errors.New("not a directory")}
		}
		return nil, notExist("readdir", p)
	}
	var out []protocol.DirEntry
	for d := range s.dirs {
		if d != c && path.Dir(d) == c {
			out = append(out, protocol.DirEntry{Name: path.Base(d), FileInfo: protocol.FileInfo{IsDir: true}})
		}
	}
	for name, b := range s.files {
		if path.Dir(name) == c {
			out = append(out, protocol.DirEntry{Name: path.Base(name), FileInfo: protocol.FileInfo{Size: int64(len(b))}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name }) // not in order: ReadDir sorts
	return out, nil
}

func (f *fakeSession) Mkdir(ctx context.Context, p string) error {
	if err := f.begin(ctx, "mkdir", p); err != nil {
		return err
	}
	s := f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	c := path.Clean(p)
	switch {
	case s.dirs[c] || s.files[c] != nil:
		return &protocol.Error{Op: "mkdir", Path: p, Kind: fs.ErrExist, Err: errors.New("exists")}
	case !s.dirs[path.Dir(c)]:
		return notExist("mkdir", p)
	}
	s.dirs[c] = true
	return nil
}

func (f *fakeSession) Close() error {
	s := f.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if !f.closed {
		f.closed = true
		s.live--
	}
	return nil
}
