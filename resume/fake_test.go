package resume_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openhaul/haul/protocol"
)

// fakeServer is an in-memory remote file system with scripted faults, for
// fast unit tests of the engine. Real servers are exercised in integration/.
type fakeServer struct {
	mu    sync.Mutex
	files map[string][]byte
	mtime map[string]time.Time

	dials int
	// dialErrs are returned by the next dials, in order.
	dialErrs []error
	// cuts are cumulative stream byte counts at which a stream fails
	// with a transient error (each fires once).
	cuts []int64
	// moved counts stream bytes across all streams.
	moved int64
	// stallAt makes the stream block (until its context ends) once moved
	// reaches it; fires once.
	stallAt int64
	// holes makes a failed writer grow the file by this many garbage
	// bytes past what it acknowledged (like concurrent SFTP writes).
	holes int64
	// fullAt makes writes that would grow a file past it fail like
	// vsftpd on a full disk (451, ErrStorage); 0 means no limit.
	fullAt int64
	// refuseOffset makes OpenWriter refuse offsets > 0.
	refuseOffset bool
	// closeErrAfterAll makes a writer's Close fail transiently once, after
	// all bytes arrived (a 426 after the last byte).
	closeErrAfterAll bool
	// ignoreBelow makes readers opened at an offset below it start at
	// zero, like an FTP server that answers 350 to REST and sends the
	// whole file (math.MaxInt64: every offset).
	ignoreBelow int64
	// lazyRenames makes this many renames answer success without doing
	// anything (rclone postpones a rename while a stale handle is open).
	lazyRenames int
	// noRest makes readers and writers refuse offsets > 0, like an FTP
	// server without REST (502).
	noRest bool
	// denyFrom and denyTo make readers opened at an offset in
	// [denyFrom, denyTo) fail with a permission error.
	denyFrom, denyTo int64
	// stats counts Stat calls.
	stats int
}

func newFakeServer() *fakeServer {
	return &fakeServer{files: map[string][]byte{}, mtime: map[string]time.Time{}, stallAt: -1}
}

func (s *fakeServer) dial(ctx context.Context) (protocol.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dials++
	if len(s.dialErrs) > 0 {
		err := s.dialErrs[0]
		s.dialErrs = s.dialErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	return &fakeSession{s: s}, nil
}

func (s *fakeServer) file(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.files[name])
}

func (s *fakeServer) put(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[name] = bytes.Clone(b)
	s.mtime[name] = time.Now()
}

var errCut = &protocol.Error{Op: "fake", Kind: protocol.ErrTransient, Code: 426, Err: errors.New("connection closed; transfer aborted")}

// step accounts n stream bytes and returns how many may pass and the
// fault to raise after them.
func (s *fakeServer) step(ctx context.Context, n int) (int, error) {
	s.mu.Lock()
	if s.stallAt >= 0 && s.moved >= s.stallAt {
		s.stallAt = -1
		s.mu.Unlock()
		<-ctx.Done()
		return 0, ctx.Err()
	}
	for i, c := range s.cuts {
		if s.moved+int64(n) >= c {
			allowed := int(c - s.moved)
			s.moved = c
			s.cuts = append(s.cuts[:i:i], s.cuts[i+1:]...)
			s.mu.Unlock()
			return allowed, errCut
		}
	}
	s.moved += int64(n)
	s.mu.Unlock()
	return n, nil
}

type fakeSession struct {
	s      *fakeServer
	closed bool
}

var _ protocol.Session = (*fakeSession)(nil)

func (f *fakeSession) Stat(ctx context.Context, path string) (protocol.FileInfo, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	f.s.stats++
	b, ok := f.s.files[path]
	if !ok {
		return protocol.FileInfo{}, &protocol.Error{Op: "stat", Path: path, Code: 550, Kind: fs.ErrNotExist}
	}
	return protocol.FileInfo{Size: int64(len(b)), ModTime: f.s.mtime[path]}, nil
}

func (f *fakeSession) OpenReader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	b := f.s.file(path)
	if b == nil {
		return nil, &protocol.Error{Op: "read", Path: path, Code: 550, Kind: fs.ErrNotExist}
	}
	f.s.mu.Lock()
	ignore, denyFrom, denyTo, noRest := f.s.ignoreBelow, f.s.denyFrom, f.s.denyTo, f.s.noRest
	f.s.mu.Unlock()
	if noRest && offset > 0 {
		return nil, &protocol.Error{Op: "read", Path: path, Code: 502, Kind: protocol.ErrResumeUnsupported}
	}
	if offset >= denyFrom && offset < denyTo {
		return nil, &protocol.Error{Op: "read", Path: path, Code: 550, Kind: fs.ErrPermission}
	}
	if offset < ignore {
		offset = 0
	}
	return &fakeReader{ctx: ctx, s: f.s, data: b[offset:]}, nil
}

type fakeReader struct {
	ctx  context.Context
	s    *fakeServer
	data []byte
}

func (r *fakeReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 32<<10)
	ok, err := r.s.step(r.ctx, n)
	copy(p, r.data[:ok])
	r.data = r.data[ok:]
	return ok, err
}

func (r *fakeReader) Close() error { return nil }

func (f *fakeSession) OpenWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	b := f.s.files[path]
	if offset > int64(len(b)) {
		return nil, errors.New("fake: offset past the end")
	}
	if offset > 0 && (f.s.refuseOffset || f.s.noRest) {
		return nil, &protocol.Error{Op: "write", Path: path, Code: 451, Kind: protocol.ErrResumeUnsupported}
	}
	f.s.files[path] = bytes.Clone(b[:offset])
	return &fakeWriter{ctx: ctx, s: f.s, path: path}, nil
}

type fakeWriter struct {
	ctx    context.Context
	s      *fakeServer
	path   string
	acked  atomic.Int64
	failed bool
}

func (w *fakeWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, 32<<10)
		ok, err := w.s.step(w.ctx, n)
		w.s.mu.Lock()
		if cur := int64(len(w.s.files[w.path])); w.s.fullAt > 0 && cur+int64(ok) > w.s.fullAt {
			ok = int(w.s.fullAt - cur)
			err = &protocol.Error{Op: "write", Path: w.path, Code: 451, Kind: protocol.ErrStorage}
		}
		w.s.files[w.path] = append(w.s.files[w.path], p[done:done+ok]...)
		w.s.mtime[w.path] = time.Now()
		if err != nil && w.s.holes > 0 {
			w.s.files[w.path] = append(w.s.files[w.path], make([]byte, w.s.holes)...)
		}
		w.s.mu.Unlock()
		done += ok
		w.acked.Add(int64(ok))
		if err != nil {
			w.failed = true
			return done, err
		}
	}
	return done, nil
}

func (w *fakeWriter) Close() error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if !w.failed && w.s.closeErrAfterAll {
		w.s.closeErrAfterAll = false
		return errCut
	}
	return nil
}

func (w *fakeWriter) Acked() int64 { return w.acked.Load() }

func (f *fakeSession) Rename(ctx context.Context, from, to string) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if f.s.lazyRenames > 0 {
		f.s.lazyRenames--
		return nil
	}
	f.s.files[to] = f.s.files[from]
	delete(f.s.files, from)
	return nil
}

func (f *fakeSession) Remove(ctx context.Context, path string) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	delete(f.s.files, path)
	return nil
}

func (f *fakeSession) Close() error { f.closed = true; return nil }

// hashingSession is a fakeSession whose server can hash (like proftpd's
// mod_digest or check-file).
type hashingSession struct {
	fakeSession
	lie bool // report a wrong hash
}

var _ protocol.Hasher = (*hashingSession)(nil)

func (h *hashingSession) HashAlgorithms() []string { return []string{"sha256"} }

func (h *hashingSession) Hash(ctx context.Context, path, algo string, start, end int64) ([]byte, error) {
	b := h.s.file(path)
	if end < 0 {
		end = int64(len(b))
	}
	sum := sha256.Sum256(b[start:end])
	if h.lie {
		sum[0] ^= 1
	}
	return sum[:], nil
}

func (s *fakeServer) hashingDial(lie bool) protocol.Dialer {
	return func(ctx context.Context) (protocol.Session, error) {
		sess, err := s.dial(ctx)
		if err != nil {
			return nil, err
		}
		return &hashingSession{fakeSession: *sess.(*fakeSession), lie: lie}, nil
	}
}

// rangeSession is a fakeSession that can write ranges (like SFTP).
type rangeSession struct{ fakeSession }

var _ protocol.RangeWriter = (*rangeSession)(nil)

func (s *fakeServer) rangeDial(ctx context.Context) (protocol.Session, error) {
	sess, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &rangeSession{fakeSession: *sess.(*fakeSession)}, nil
}

func (r *rangeSession) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return &fakeRangeWriter{ctx: ctx, s: r.s, path: path, off: offset}, nil
}

type fakeRangeWriter struct {
	ctx   context.Context
	s     *fakeServer
	path  string
	off   int64
	acked atomic.Int64
}

func (w *fakeRangeWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		if err := w.ctx.Err(); err != nil {
			return done, err
		}
		ok, err := w.s.step(w.ctx, min(len(p)-done, 32<<10))
		w.s.mu.Lock()
		b := w.s.files[w.path]
		acked := w.acked.Load()
		end := w.off + acked + int64(ok)
		if int64(len(b)) < end {
			b = append(b, make([]byte, end-int64(len(b)))...)
		}
		copy(b[w.off+acked:end], p[done:done+ok])
		w.s.files[w.path] = b
		w.s.mu.Unlock()
		done += ok
		w.acked.Add(int64(ok))
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (w *fakeRangeWriter) Close() error { return nil }
func (w *fakeRangeWriter) Acked() int64 { return w.acked.Load() }

// ftpRangeSession is a rangeSession with FTP's range semantics: no range
// writer at offset 0, and a writer that acknowledges only a whole
// transfer. Its writers keep the last inFlight bytes handed to them out of
// the file until more follow or Close succeeds, so a cut loses them, as
// socket buffers do.
type ftpRangeSession struct {
	rangeSession
	inFlight int
	// clamp makes a write past the end land at the end (pure-ftpd).
	clamp bool
	// finCuts makes this many range writers' Close drop what is in flight
	// and still succeed, as a 226 after a middlebox's FIN does.
	finCuts *atomic.Int32
}

var _ protocol.UnconfirmedRangeWriter = (*ftpRangeSession)(nil)

func (f *ftpRangeSession) UnconfirmedRanges() {}

func (s *fakeServer) ftpRangeDial(inFlight int, clamp bool, finCuts *atomic.Int32) protocol.Dialer {
	return func(ctx context.Context) (protocol.Session, error) {
		sess, err := s.rangeDial(ctx)
		if err != nil {
			return nil, err
		}
		return &ftpRangeSession{rangeSession: *sess.(*rangeSession), inFlight: inFlight, clamp: clamp, finCuts: finCuts}, nil
	}
}

func (f *ftpRangeSession) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	if offset == 0 {
		return nil, &protocol.Error{Op: "write", Path: path, Kind: protocol.ErrUnsupported, Err: errors.New("offset 0")}
	}
	if f.clamp {
		if size := int64(len(f.s.file(path))); offset > size {
			offset = size
		}
	}
	return &bufferedRangeWriter{w: fakeRangeWriter{ctx: ctx, s: f.s, path: path, off: offset}, keep: f.inFlight, fins: f.finCuts}, nil
}

type bufferedRangeWriter struct {
	w      fakeRangeWriter
	keep   int
	held   []byte
	handed atomic.Int64
	err    error
	// fins counts Closes left that drop what is held and succeed; only
	// writers that moved more than a probe's few KiB count.
	fins *atomic.Int32
}

func (b *bufferedRangeWriter) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.handed.Add(int64(len(p)))
	b.held = append(b.held, p...)
	if over := len(b.held) - b.keep; over > 0 {
		n, err := b.w.Write(b.held[:over])
		b.held = b.held[n:]
		if err != nil {
			b.err = err
			return len(p), err
		}
	}
	return len(p), nil
}

func (b *bufferedRangeWriter) Close() error {
	if b.err != nil {
		return b.err
	}
	if b.fins != nil && b.handed.Load() > 1<<20 && b.fins.Add(-1) >= 0 {
		b.held = nil
		return nil
	}
	_, err := b.w.Write(b.held)
	b.held = nil
	return err
}

func (b *bufferedRangeWriter) Acked() int64 { return b.handed.Load() }

// noSizeSession has a Size the server refuses (an FTP server without
// SIZE: 502); its Stat still answers.
type noSizeSession struct{ fakeSession }

var _ protocol.Sizer = (*noSizeSession)(nil)

func (n *noSizeSession) Size(ctx context.Context, path string) (int64, error) {
	return 0, &protocol.Error{Op: "stat", Path: path, Code: 502, Kind: protocol.ErrUnsupported, Err: errors.New("no SIZE")}
}

func (s *fakeServer) noSizeDial(ctx context.Context) (protocol.Session, error) {
	f, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &noSizeSession{*f.(*fakeSession)}, nil
}
