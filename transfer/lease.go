package transfer

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/openhaul/haul/protocol"
)

// lease is a pooled session lent to the resume engine: its Close hands the
// session back (to the call that lent it, or to the pool) when it is still
// fit, and closes it otherwise.
//
// It is fit while every call on it succeeded or got an answer (see
// answered), no call's context ended, and every reader and writer opened
// on it was closed before it; a successful Check (the engine's own probe
// after a failed attempt) makes it fit again. Once closed, the lease
// refuses every call: the session may already serve someone else.
//
// The engine finds a session's capabilities by type assertion, so a lease
// must have exactly those of its session where the engine acts on their
// mere presence: Checker (reuse after a failure), RangeWriter and
// UnconfirmedRangeWriter (segmented uploads). wrapLease picks the type
// with those methods. The other optional interfaces are on every lease
// and behave as their contracts allow for a session without them: a
// RangeReader reads on with OpenReader, a Hasher offers no algorithm, a
// SpaceReporter or Truncater answers protocol.ErrUnsupported.
type lease struct {
	s protocol.Session
	// back hands s back, fit or not, once.
	back func(s protocol.Session, fit bool)

	mu      sync.Mutex
	broken  bool
	busy    int // calls in progress
	streams int // readers and writers not closed yet
	closed  bool
}

var errLeaseClosed = errors.New("pooled session used after Close")

// wrapLease returns l as a protocol.Session with the capabilities of l.s.
func wrapLease(l *lease) protocol.Session {
	_, chk := l.s.(protocol.Checker)
	_, rw := l.s.(protocol.RangeWriter)
	_, unconfirmed := l.s.(protocol.UnconfirmedRangeWriter)
	switch {
	case unconfirmed && chk:
		return leaseUnconfirmedChecker{leaseRangesChecker{l}}
	case unconfirmed:
		return leaseUnconfirmed{leaseRanges{l}}
	case rw && chk:
		return leaseRangesChecker{l}
	case rw:
		return leaseRanges{l}
	case chk:
		return leaseChecker{l}
	}
	return l
}

type (
	leaseChecker            struct{ *lease }
	leaseRanges             struct{ *lease }
	leaseRangesChecker      struct{ *lease }
	leaseUnconfirmed        struct{ leaseRanges }
	leaseUnconfirmedChecker struct{ leaseRangesChecker }
)

var (
	_ protocol.Checker                = leaseChecker{}
	_ protocol.RangeWriter            = leaseRanges{}
	_ protocol.Checker                = leaseRangesChecker{}
	_ protocol.RangeWriter            = leaseRangesChecker{}
	_ protocol.UnconfirmedRangeWriter = leaseUnconfirmed{}
	_ protocol.UnconfirmedRangeWriter = leaseUnconfirmedChecker{}
	_ protocol.Checker                = leaseUnconfirmedChecker{}

	_ protocol.RangeReader   = (*lease)(nil)
	_ protocol.Hasher        = (*lease)(nil)
	_ protocol.SpaceReporter = (*lease)(nil)
	_ protocol.Truncater     = (*lease)(nil)
)

func (l leaseChecker) Check(ctx context.Context) error       { return l.check(ctx) }
func (l leaseRangesChecker) Check(ctx context.Context) error { return l.check(ctx) }
func (l leaseRanges) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return l.openRangeWriter(ctx, path, offset)
}
func (l leaseRangesChecker) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return l.openRangeWriter(ctx, path, offset)
}

// UnconfirmedRanges marks the type, as the session's does.
func (leaseUnconfirmed) UnconfirmedRanges() {}

// UnconfirmedRanges marks the type, as the session's does.
func (leaseUnconfirmedChecker) UnconfirmedRanges() {}

// enter starts a call, or refuses it once the lease is closed.
func (l *lease) enter(op, path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return &protocol.Error{Op: op, Path: path, Err: errLeaseClosed}
	}
	l.busy++
	return nil
}

// exit ends a call that ran under ctx and returned err; opened reports a
// reader or writer it opened.
func (l *lease) exit(ctx context.Context, err error, opened bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy--
	if !fit(ctx, err) {
		l.broken = true
	}
	if opened {
		l.streams++
	}
}

func (l *lease) markBroken() {
	l.mu.Lock()
	l.broken = true
	l.mu.Unlock()
}

// streamClosed ends a reader or writer opened under ctx whose Close
// returned err.
func (l *lease) streamClosed(ctx context.Context, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.streams--
	if !fit(ctx, err) {
		l.broken = true
	}
}

// Close hands the session back: to be reused if it is fit and nothing is
// in progress on it, else to be closed. It is idempotent.
func (l *lease) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	ok := !l.broken && l.busy == 0 && l.streams == 0
	l.mu.Unlock()
	l.back(l.s, ok)
	return nil
}

// abandon marks the lease broken and closes it (a lease the engine did not
// close by the end of its call).
func (l *lease) abandon() {
	l.markBroken()
	_ = l.Close()
}

func (l *lease) Stat(ctx context.Context, path string) (protocol.FileInfo, error) {
	if err := l.enter("stat", path); err != nil {
		return protocol.FileInfo{}, err
	}
	fi, err := l.s.Stat(ctx, path)
	l.exit(ctx, err, false)
	return fi, err
}

// Size is the session's Size where it has one; without one it fails with
// protocol.ErrUnsupported, and the engine asks Stat.
func (l *lease) Size(ctx context.Context, path string) (int64, error) {
	sz, ok := l.s.(protocol.Sizer)
	if !ok {
		return 0, &protocol.Error{Op: "stat", Path: path, Kind: protocol.ErrUnsupported, Err: errors.New("the session has no Size")}
	}
	if err := l.enter("stat", path); err != nil {
		return 0, err
	}
	n, err := sz.Size(ctx, path)
	l.exit(ctx, err, false)
	return n, err
}

func (l *lease) OpenReader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	if err := l.enter("read", path); err != nil {
		return nil, err
	}
	rd, err := l.s.OpenReader(ctx, path, offset)
	l.exit(ctx, err, err == nil)
	if err != nil {
		return nil, err
	}
	return l.reader(ctx, rd), nil
}

// OpenRangeReader is the session's where it has one, else OpenReader (the
// contract lets the stream go on past length).
func (l *lease) OpenRangeReader(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error) {
	rr, ok := l.s.(protocol.RangeReader)
	if !ok {
		return l.OpenReader(ctx, path, offset)
	}
	if err := l.enter("read", path); err != nil {
		return nil, err
	}
	rd, err := rr.OpenRangeReader(ctx, path, offset, length)
	l.exit(ctx, err, err == nil)
	if err != nil {
		return nil, err
	}
	return l.reader(ctx, rd), nil
}

func (l *lease) OpenWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	if err := l.enter("write", path); err != nil {
		return nil, err
	}
	w, err := l.s.OpenWriter(ctx, path, offset)
	l.exit(ctx, err, err == nil)
	if err != nil {
		return nil, err
	}
	return l.writer(ctx, w), nil
}

func (l *lease) openRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	if err := l.enter("write", path); err != nil {
		return nil, err
	}
	w, err := l.s.(protocol.RangeWriter).OpenRangeWriter(ctx, path, offset)
	l.exit(ctx, err, err == nil)
	if err != nil {
		return nil, err
	}
	return l.writer(ctx, w), nil
}

func (l *lease) Rename(ctx context.Context, from, to string) error {
	if err := l.enter("rename", from); err != nil {
		return err
	}
	err := l.s.Rename(ctx, from, to)
	l.exit(ctx, err, false)
	return err
}

func (l *lease) Remove(ctx context.Context, path string) error {
	if err := l.enter("remove", path); err != nil {
		return err
	}
	err := l.s.Remove(ctx, path)
	l.exit(ctx, err, false)
	return err
}

// check is the session's Check; success makes the lease fit again when no
// reader or writer is open.
func (l *lease) check(ctx context.Context) error {
	if err := l.enter("check", ""); err != nil {
		return err
	}
	err := l.s.(protocol.Checker).Check(ctx)
	l.mu.Lock()
	l.busy--
	switch {
	case err == nil && ctx.Err() == nil && l.streams == 0:
		l.broken = false
	case !fit(ctx, err):
		l.broken = true
	}
	l.mu.Unlock()
	return err
}

// HashAlgorithms is the session's, or none.
func (l *lease) HashAlgorithms() []string {
	h, ok := l.s.(protocol.Hasher)
	if !ok || l.enter("hash", "") != nil {
		return nil
	}
	algos := h.HashAlgorithms()
	l.exit(context.Background(), nil, false)
	return algos
}

func (l *lease) Hash(ctx context.Context, path, algorithm string, start, end int64) ([]byte, error) {
	h, ok := l.s.(protocol.Hasher)
	if !ok {
		return nil, unsupported("hash", path)
	}
	if err := l.enter("hash", path); err != nil {
		return nil, err
	}
	sum, err := h.Hash(ctx, path, algorithm, start, end)
	l.exit(ctx, err, false)
	return sum, err
}

func (l *lease) FreeSpace(ctx context.Context, path string) (int64, error) {
	sr, ok := l.s.(protocol.SpaceReporter)
	if !ok {
		return 0, unsupported("statvfs", path)
	}
	if err := l.enter("statvfs", path); err != nil {
		return 0, err
	}
	n, err := sr.FreeSpace(ctx, path)
	l.exit(ctx, err, false)
	return n, err
}

func (l *lease) Truncate(ctx context.Context, path string, size int64) error {
	t, ok := l.s.(protocol.Truncater)
	if !ok {
		return unsupported("truncate", path)
	}
	if err := l.enter("truncate", path); err != nil {
		return err
	}
	err := t.Truncate(ctx, path, size)
	l.exit(ctx, err, false)
	return err
}

var errNoCapability = errors.New("the session cannot do this")

func unsupported(op, path string) error {
	return &protocol.Error{Op: op, Path: path, Kind: protocol.ErrUnsupported, Err: errNoCapability}
}

// reader wraps rd, keeping its WriterTo (SFTP pipelines reads there).
func (l *lease) reader(ctx context.Context, rd io.ReadCloser) io.ReadCloser {
	r := &leaseReader{l: l, ctx: ctx, r: rd}
	if _, ok := rd.(io.WriterTo); ok {
		return leaseReaderTo{r}
	}
	return r
}

type leaseReader struct {
	l    *lease
	ctx  context.Context
	r    io.ReadCloser
	once sync.Once
}

func (r *leaseReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.l.markBroken()
	}
	return n, err
}

func (r *leaseReader) Close() error {
	var err error
	r.once.Do(func() {
		err = r.r.Close()
		r.l.streamClosed(r.ctx, err)
	})
	return err
}

type leaseReaderTo struct{ *leaseReader }

func (r leaseReaderTo) WriteTo(w io.Writer) (int64, error) {
	n, err := r.r.(io.WriterTo).WriteTo(w)
	if err != nil {
		r.l.markBroken()
	}
	return n, err
}

// writer wraps w, keeping its ReaderFrom (the data connection's fast
// path) and its SequentialWriter mark.
func (l *lease) writer(ctx context.Context, w protocol.Writer) protocol.Writer {
	lw := &leaseWriter{l: l, ctx: ctx, w: w}
	_, rf := w.(io.ReaderFrom)
	_, seq := w.(protocol.SequentialWriter)
	switch {
	case rf && seq:
		return leaseWriterFromSeq{leaseWriterFrom{lw}}
	case rf:
		return leaseWriterFrom{lw}
	case seq:
		return leaseWriterSeq{lw}
	}
	return lw
}

type leaseWriter struct {
	l    *lease
	ctx  context.Context
	w    protocol.Writer
	once sync.Once
}

func (w *leaseWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		w.l.markBroken()
	}
	return n, err
}

func (w *leaseWriter) Close() error {
	var err error
	w.once.Do(func() {
		err = w.w.Close()
		w.l.streamClosed(w.ctx, err)
	})
	return err
}

func (w *leaseWriter) Acked() int64 { return w.w.Acked() }

type (
	leaseWriterFrom    struct{ *leaseWriter }
	leaseWriterSeq     struct{ *leaseWriter }
	leaseWriterFromSeq struct{ leaseWriterFrom }
)

var (
	_ io.ReaderFrom             = leaseWriterFrom{}
	_ protocol.SequentialWriter = leaseWriterSeq{}
	_ protocol.SequentialWriter = leaseWriterFromSeq{}
	_ io.ReaderFrom             = leaseWriterFromSeq{}
)

func (w leaseWriterFrom) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.w.(io.ReaderFrom).ReadFrom(r)
	if err != nil {
		w.l.markBroken()
	}
	return n, err
}

// Sequential marks the type, as the writer's does.
func (leaseWriterSeq) Sequential() {}

// Sequential marks the type, as the writer's does.
func (leaseWriterFromSeq) Sequential() {}
