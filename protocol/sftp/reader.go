package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
)

// OpenReader opens path and returns a reader of its bytes from offset to
// the end. The reader implements io.WriterTo: io.Copy(dst, r) keeps
// WithConcurrency read requests in flight. The file's size is taken when
// it is opened: a stream that ends before that size (the file shrank)
// fails with an error matching io.ErrUnexpectedEOF and
// protocol.ErrTransient; bytes appended while reading are delivered too.
// ctx bounds the reader's whole life.
//
// The reader runs on an SFTP channel of the session's own (opened on
// first use, kept for later readers), whose replies are read straight
// into a fixed set of buffers; where the server refuses a second channel,
// or another reader holds it, pkg/sftp's concurrent reads are used.
func (s *Session) OpenReader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	return s.openReader(ctx, path, offset, -1)
}

// OpenRangeReader is OpenReader for a caller that reads at most length
// bytes: on the session's read channel no request reaches past them and
// the stream ends with io.EOF after them (or at the end of the file, if
// that comes first). Over pkg/sftp's reads it is OpenReader.
func (s *Session) OpenRangeReader(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error) {
	if length < 0 {
		return nil, &protocol.Error{Op: "read", Path: path, Err: errors.New("negative length")}
	}
	return s.openReader(ctx, path, offset, length)
}

var _ protocol.RangeReader = (*Session)(nil)

func (s *Session) openReader(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error) {
	stop, err := s.beginOpen(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	if fc := s.takeDataChannel(); fc != nil {
		return s.openStream(ctx, fc, path, offset, length, stop)
	}
	fail := func(f *sftp.File, err error) (io.ReadCloser, error) {
		return nil, s.openFailed(ctx, path, f, stop, err)
	}
	f, err := s.client.Open(path)
	if err != nil {
		return fail(nil, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(f, err)
	}
	if fi.IsDir() {
		return fail(f, fmt.Errorf("%s is a directory", path))
	}
	size := fi.Size()
	if err := checkSize(size); err != nil {
		return fail(f, err)
	}
	if offset > size {
		return fail(f, fmt.Errorf("offset %d is past the end of the file (%d bytes)", offset, size))
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fail(f, err)
	}
	return &reader{s: s, ctx: ctx, src: f, closeSrc: func(bool) error { return f.Close() },
		path: path, want: size - offset, stop: stop}, nil
}

// openStream opens path on the read channel fc and starts the pipeline.
func (s *Session) openStream(ctx context.Context, fc *fxpConn, path string, offset, length int64, stop func() bool) (io.ReadCloser, error) {
	f, err := openRemote(fc, path)
	inStep := errors.As(err, new(*fxStatusError)) // the channel can carry on
	if err == nil {
		inStep = true
		switch {
		case f.isDir:
			err = fmt.Errorf("%s is a directory", path)
		case offset > f.size:
			err = fmt.Errorf("offset %d is past the end of the file (%d bytes)", offset, f.size)
		}
	}
	if err != nil {
		if f != nil && inStep {
			if cerr := f.close(); cerr != nil && !errors.As(cerr, new(*fxStatusError)) {
				inStep = false
			}
		}
		s.releaseDataChannel(fc, inStep)
		return nil, s.openFailed(ctx, path, nil, stop, err)
	}
	end, want := int64(-1), f.size-offset
	if length >= 0 && offset+length < f.size {
		end, want = offset+length, length
	}
	// More than a channel window of requests in flight only queues them at
	// the server, and each holds a buffer here.
	depth := min(s.opts.concurrency, max(2, channelWindow/s.opts.packetSize))
	p := newPipeline(f, offset, end, s.opts.packetSize, depth)
	st := &stream{p: p}
	return &reader{s: s, ctx: ctx, src: st, closeSrc: func(aborted bool) error {
		return s.closeStream(fc, p, aborted)
	}, path: path, want: want, stop: stop}, nil
}

// stream reads through a pipeline.
type stream struct {
	p   *pipeline
	cur []byte // the unread rest of the last chunk
}

func (st *stream) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(st.cur) == 0 {
		c, err := st.p.chunk()
		if err != nil {
			return 0, err
		}
		st.cur = c
	}
	n := copy(b, st.cur)
	st.cur = st.cur[n:]
	return n, nil
}

func (st *stream) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(st.cur) > 0 {
		m, err := w.Write(st.cur)
		n += int64(m)
		st.cur = st.cur[m:]
		if err != nil {
			return n, err
		}
	}
	for {
		c, err := st.p.chunk()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		m, err := w.Write(c)
		n += int64(m)
		if err != nil {
			st.cur = c[m:]
			return n, err
		}
	}
}

// closeStream waits for the requests still in flight, closes the handle and
// hands the read channel back, or drops it when it is out of step. After
// an abort the connection is gone and the pipeline may still be in use by
// the aborted call: it is left alone.
func (s *Session) closeStream(fc *fxpConn, p *pipeline, aborted bool) error {
	if aborted {
		s.releaseDataChannel(fc, false)
		return errSessionClosed
	}
	if !p.drain() {
		s.releaseDataChannel(fc, false)
		return p.err
	}
	err := p.f.close()
	s.releaseDataChannel(fc, err == nil || errors.As(err, new(*fxStatusError)))
	return err
}

// takeDataChannel returns the session's data channel (a second SFTP
// channel, which readers and writers use), opening it on first use, or nil
// when another reader or writer holds it or the server refused it (the
// caller then goes through pkg/sftp). The caller bounds the call (the
// session is aborted when its context ends).
func (s *Session) takeDataChannel() *fxpConn {
	s.rcMu.Lock()
	defer s.rcMu.Unlock()
	if s.rcBusy || s.rcRefused {
		return nil
	}
	if s.rc == nil {
		fc, err := openFXP(s.ssh.Conn)
		if err != nil {
			if !s.aborted.Load() && !s.closed.Load() {
				s.log.Debug("sftp: no second channel; reading and writing through the main channel", "err", err)
				s.rcRefused = true
			}
			return nil
		}
		s.rc = fc
	}
	s.rcBusy = true
	return s.rc
}

// releaseDataChannel hands fc back; when it is not reusable it is closed
// and the next reader or writer opens a new one.
func (s *Session) releaseDataChannel(fc *fxpConn, reusable bool) {
	s.rcMu.Lock()
	defer s.rcMu.Unlock()
	if s.rc == fc {
		s.rcBusy = false
		if !reusable {
			s.rc = nil
		}
	}
	if !reusable {
		_ = fc.Close()
	}
}

// reader is the io.ReadCloser returned by OpenReader.
type reader struct {
	s   *Session
	ctx context.Context
	src interface {
		io.Reader
		io.WriterTo
	}
	// closeSrc closes src; aborted: the connection was torn down while
	// a call was blocked.
	closeSrc func(aborted bool) error
	path     string
	want     int64 // bytes expected from the open offset to the size at open
	stop     func() bool

	got       atomic.Int64
	busy      atomic.Int32
	closeOnce sync.Once
	closeErr  error
	aborted   atomic.Bool
}

var (
	_ io.ReadCloser = (*reader)(nil)
	_ io.WriterTo   = (*reader)(nil)
)

// Read reads the next bytes of the file.
func (r *reader) Read(p []byte) (int, error) {
	r.busy.Add(1)
	defer r.busy.Add(-1)
	n, err := r.src.Read(p)
	got := r.got.Add(int64(n))
	return n, r.check(got, err)
}

// WriteTo copies the rest of the file to w with concurrent read requests.
func (r *reader) WriteTo(w io.Writer) (int64, error) {
	r.busy.Add(1)
	defer r.busy.Add(-1)
	n, err := r.src.WriteTo(w)
	got := r.got.Add(n)
	if err == nil {
		err = io.EOF
	}
	err = r.check(got, err)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// check turns the end of the stream into io.EOF or a short-stream error and
// classifies other errors.
func (r *reader) check(got int64, err error) error {
	switch {
	case err == nil:
		return nil
	case r.ctx.Err() != nil:
		return &protocol.Error{Op: "read", Path: r.path, Err: r.ctx.Err()}
	case err == io.EOF && got >= r.want:
		return io.EOF
	case err == io.EOF:
		return &protocol.Error{Op: "read", Path: r.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("stream ended after %d of %d bytes (file shrank?): %w", got, r.want, io.ErrUnexpectedEOF)}
	case r.aborted.Load():
		return &protocol.Error{Op: "read", Path: r.path, Err: fmt.Errorf("reader closed: %w", err)}
	}
	return classify("read", r.path, err, r.s.opts.password)
}

// Close closes the remote file. Closing while a Read or WriteTo is blocked
// in another goroutine tears down the connection to unblock it; the
// Session is unusable afterwards.
func (r *reader) Close() error {
	r.closeOnce.Do(func() {
		if r.busy.Load() > 0 {
			r.aborted.Store(true)
			r.s.abort()
		}
		err := r.closeSrc(r.aborted.Load())
		cancelled := !r.stop()
		switch {
		case r.aborted.Load():
		case cancelled:
			r.closeErr = &protocol.Error{Op: "close", Path: r.path, Err: r.ctx.Err()}
		default:
			r.closeErr = classify("close", r.path, err, r.s.opts.password)
		}
	})
	return r.closeErr
}

// beginOpen checks what opening a stream at offset needs and binds ctx to
// the session for the stream's life; the returned stop unbinds it (false
// when ctx already fired).
func (s *Session) beginOpen(ctx context.Context, path string, offset int64) (func() bool, error) {
	if offset < 0 {
		return nil, &protocol.Error{Op: "open", Path: path, Err: fmt.Errorf("negative offset %d", offset)}
	}
	if err := protocol.CheckPath(path); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &protocol.Error{Op: "open", Path: path, Err: err}
	}
	if s.closed.Load() || s.aborted.Load() {
		return nil, &protocol.Error{Op: "open", Path: path, Kind: protocol.ErrTransient, Err: errSessionClosed}
	}
	return context.AfterFunc(ctx, s.abort), nil
}

// openFailed closes f (if any), unbinds ctx and classifies err; a fired ctx
// wins over err.
func (s *Session) openFailed(ctx context.Context, path string, f *sftp.File, stop func() bool, err error) error {
	if f != nil {
		_ = f.Close()
	}
	if !stop() {
		return &protocol.Error{Op: "open", Path: path, Err: ctx.Err()}
	}
	return classify("open", path, err, s.opts.password)
}
