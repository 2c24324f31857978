package ftp

import (
	"context"
	"fmt"
	"io"

	"github.com/jlaffaye/ftp"

	"github.com/openhaul/haul/protocol"
)

// OpenReader sends SIZE, then REST offset (when offset > 0) and RETR. The
// reader ends with io.EOF only when the server confirmed the transfer
// (226/250) and exactly SIZE-offset bytes arrived; a stream that ends short
// is an error matching protocol.ErrTransient. Closing it early aborts the
// transfer and leaves the Session usable. A REST answered with anything but
// 350 matches protocol.ErrResumeUnsupported, and no RETR is sent; once the
// server refused REST for good, later calls with offset > 0 fail that way at
// once (see rest.go). An offset past the end of the file is an error of
// unknown kind. On servers without SIZE the byte count cannot be checked and
// the server's final reply alone decides.
func (s *Session) OpenReader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	f := failure{op: "read", path: path, offset: offset}
	if err := s.beginTransfer(ctx, f); err != nil {
		return nil, err
	}
	if err := s.knownRestRefusal(f); err != nil {
		s.end()
		return nil, err
	}
	want := int64(-1)
	size, err := s.fileSize(path)
	switch {
	case err == nil:
		if offset > size {
			s.end()
			return nil, &protocol.Error{Op: f.op, Path: path,
				Err: fmt.Errorf("%w: offset %d, size %d", errOffsetPastEnd, offset, size)}
		}
		want = size - offset
	case unsupported(err):
	default:
		s.end()
		return nil, s.fail(ctx, failure{op: f.op, path: path, verb: "SIZE"}, err)
	}
	r := &reader{s: s, ctx: ctx, f: f, want: want}
	if want == 0 {
		// Nothing to fetch: SIZE already proved it; some servers refuse
		// REST at the end of a file.
		return r, nil
	}
	// RetrFrom sends REST only when offset > 0, after opening the data
	// connection, which it closes again when REST is refused.
	resp, err := s.c.RetrFrom(path, uint64(offset))
	if err != nil {
		s.clearDeadline()
		f = s.verbOf(f)
		err = s.fail(ctx, f, err)
		s.noteRest(f, err)
		s.end()
		return nil, err
	}
	r.resp = resp
	return r, nil
}

// reader is the io.ReadCloser returned by OpenReader.
type reader struct {
	s        *Session
	ctx      context.Context
	f        failure
	resp     *ftp.Response // nil when nothing was to be fetched
	want     int64         // expected bytes, -1 when unknown
	n        int64
	err      error // sticky: io.EOF or the classified failure
	finished bool  // the final reply has been read
	closed   bool
	closeErr error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.closed {
		return 0, &protocol.Error{Op: r.f.op, Path: r.f.path, Err: errClosed}
	}
	if r.ctx.Err() != nil {
		r.err = r.s.wrapErr(r.ctx, r.f, r.ctx.Err())
		return 0, r.err
	}
	if r.resp == nil {
		r.err = io.EOF
		return 0, io.EOF
	}
	n, err := r.resp.Read(p)
	r.n += int64(n)
	if r.want >= 0 && r.n > r.want {
		n -= int(r.n - r.want)
		r.n = r.want
		r.err = &protocol.Error{Op: r.f.op, Path: r.f.path, Kind: protocol.ErrTransient, Err: errLongStream}
		return n, r.err
	}
	switch {
	case err == io.EOF:
		r.finished = true
		cerr := r.resp.Close() // reads 226 (bounded by the shut timeout)
		r.s.clearDeadline()
		if cerr != nil {
			r.err = r.s.fail(r.ctx, failure{op: r.f.op, path: r.f.path, verb: "RETR", started: true}, cerr)
			return n, r.err
		}
		if r.want >= 0 && r.n != r.want {
			r.err = &protocol.Error{Op: r.f.op, Path: r.f.path, Kind: protocol.ErrTransient,
				Err: fmt.Errorf("%w: %w: got %d of %d bytes", errShortStream, io.ErrUnexpectedEOF, r.n, r.want)}
			return n, r.err
		}
		r.err = io.EOF
		return n, io.EOF
	case err != nil:
		// A data connection error: the reply, if any, is read by Close.
		r.err = r.s.wrapErr(r.ctx, failure{op: r.f.op, path: r.f.path, verb: "RETR", started: true}, err)
		return n, r.err
	}
	return n, nil
}

// Close aborts the transfer if it is still running (closing the data
// connection and reading the server's 426/451, which is expected then) and
// releases the Session for the next operation. Once the reader's ctx is
// cancelled, Close returns an error matching context.Cause(ctx) and the
// Session is unusable, whatever the reads had returned.
func (r *reader) Close() error {
	if r.closed {
		return r.closeErr
	}
	r.closed = true
	// As in writer.Close: abort now rather than when ctx's AfterFunc gets
	// to run, or the server's 426/226 would make the verdict nil.
	cancelled := r.s.abortIfCancelled(r.ctx)
	if r.resp != nil && !r.finished {
		r.finished = true
		cerr := r.resp.Close()
		r.s.clearDeadline()
		switch code := replyCode(cerr); {
		case cerr == nil, code > 0 && code < 300, code == 426, code == 450, code == 451:
			// 226/250 (the transfer had ended anyway), 426/450/451 (the
			// abort was acknowledged), or another preliminary or
			// positive reply (pure-ftpd answers an aborted RETR with a
			// "150 <statistics>" line): a complete reply was read and the
			// control connection is in sync.
		default:
			// No reply (timeout, closed connection) or another error
			// reply such as 421: report it; fail kills the session when
			// the control connection is unusable.
			r.closeErr = r.s.fail(r.ctx, failure{op: r.f.op, path: r.f.path, verb: "RETR", started: true}, cerr)
		}
	}
	if r.s.end() || cancelled {
		r.closeErr = r.s.wrapErr(r.ctx, r.f, context.Cause(r.ctx))
	}
	return r.closeErr
}
