package sftp

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
)

// OpenReader opens path and returns a reader of its bytes from offset to
// the end. The reader implements io.WriterTo, so io.Copy(dst, r) uses
// pkg/sftp's concurrent reads. The file's size is taken when it is opened:
// a stream that ends before that size (the file shrank) fails with an error
// matching io.ErrUnexpectedEOF and protocol.ErrTransient; bytes appended
// while reading are delivered too. ctx bounds the reader's whole life.
func (s *Session) OpenReader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	stop, err := s.beginOpen(ctx, path, offset)
	if err != nil {
		return nil, err
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
	if offset > size {
		return fail(f, fmt.Errorf("offset %d is past the end of the file (%d bytes)", offset, size))
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fail(f, err)
	}
	return &reader{s: s, ctx: ctx, f: f, path: path, want: size - offset, stop: stop}, nil
}

// reader is the io.ReadCloser returned by OpenReader.
type reader struct {
	s    *Session
	ctx  context.Context
	f    *sftp.File
	path string
	want int64 // bytes expected from the open offset to the size at open
	stop func() bool

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
	n, err := r.f.Read(p)
	got := r.got.Add(int64(n))
	return n, r.check(got, err)
}

// WriteTo copies the rest of the file to w with concurrent read requests.
func (r *reader) WriteTo(w io.Writer) (int64, error) {
	r.busy.Add(1)
	defer r.busy.Add(-1)
	n, err := r.f.WriteTo(w)
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
	return classify("read", r.path, err)
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
		err := r.f.Close()
		cancelled := !r.stop()
		switch {
		case r.aborted.Load():
		case cancelled:
			r.closeErr = &protocol.Error{Op: "close", Path: r.path, Err: r.ctx.Err()}
		default:
			r.closeErr = classify("close", r.path, err)
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
	return classify("open", path, err)
}
