package ftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/openhaul/haul/protocol"
)

// OpenWriter starts an upload of path at offset: STOR at offset 0 (which
// truncates), REST offset + STOR otherwise. It returns once the server has
// accepted the transfer, so a refusal is reported here: a REST answered with
// anything but 350 (no STOR is sent then), or a resumed STOR refused before
// any data moved (proftpd's 451 without AllowStoreRestart), matches
// protocol.ErrResumeUnsupported. Once the server refused REST for good, later
// calls with offset > 0, OpenRangeWriter's included, fail that way at once
// (see rest.go). An offset past the remote size (checked with SIZE where the
// server has it) is refused with an error of unknown kind: FTP servers would
// leave a hole.
//
// The writer implements io.ReaderFrom, so io.Copy(w, file) hands an
// *os.File straight to the data socket (sendfile); Acked then advances only
// when that copy returns. Close waits for the server's final reply.
func (s *Session) OpenWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return s.openWriter(ctx, path, offset, false)
}

// OpenRangeWriter starts an upload of path at offset with REST offset +
// STOR and no check of the remote size: an offset past the end is sent as
// it is, and what the server makes of it is the caller's to probe (see
// protocol.UnconfirmedRangeWriter). Offset 0 is refused with an error
// matching protocol.ErrUnsupported, because STOR at 0 truncates the file.
// Acked is only an upper bound until Close returns nil.
func (s *Session) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	if offset <= 0 {
		return nil, &protocol.Error{Op: "write", Path: path, Kind: protocol.ErrUnsupported, Err: errRangeAtZero}
	}
	return s.openWriter(ctx, path, offset, true)
}

// UnconfirmedRanges marks FTP's range writes as unconfirmed.
func (s *Session) UnconfirmedRanges() {}

var _ protocol.UnconfirmedRangeWriter = (*Session)(nil)

func (s *Session) openWriter(ctx context.Context, path string, offset int64, ranged bool) (protocol.Writer, error) {
	f := failure{op: "write", path: path, offset: offset}
	if err := s.beginTransfer(ctx, f); err != nil {
		return nil, err
	}
	if err := s.knownRestRefusal(f); err != nil {
		s.end()
		return nil, err
	}
	if offset > 0 && !ranged {
		size, err := s.fileSize(path)
		switch {
		case err == nil && offset > size:
			s.end()
			return nil, &protocol.Error{Op: f.op, Path: path,
				Err: fmt.Errorf("%w: offset %d, size %d", errOffsetPastEnd, offset, size)}
		case err != nil && replyCode(err) == 550:
			s.end()
			return nil, s.shown(&protocol.Error{Op: f.op, Path: path, Code: 550,
				Err: fmt.Errorf("%w: offset %d, no remote file: %w", errOffsetPastEnd, offset, err)})
		case err != nil && !unsupported(err):
			s.end()
			return nil, s.fail(ctx, failure{op: f.op, path: path, verb: "SIZE"}, err)
		}
	}
	w := &writer{
		s:       s,
		ctx:     ctx,
		f:       f,
		jobs:    make(chan job),
		results: make(chan jobResult, 1),
		started: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.mu.Lock()
	s.writer = w
	s.mu.Unlock()
	go w.run(path, offset)
	select {
	case <-w.started:
		return w, nil
	case <-w.done:
	}
	// Refused (or failed) before the server accepted the transfer. A
	// refused REST: StorFrom closed the data connection and sent no STOR.
	s.clearDeadline()
	wf := w.failure()
	err := s.fail(ctx, wf, w.result)
	s.noteRest(wf, err)
	if err == nil {
		// StorFrom cannot succeed without calling WriteTo; be safe.
		err = &protocol.Error{Op: f.op, Path: path, Kind: protocol.ErrTransient, Err: errAborted}
	}
	s.end()
	return nil, err
}

type job struct {
	p   []byte
	r   io.Reader
	eof bool
}

type jobResult struct {
	n   int64
	err error
}

// writer is the protocol.Writer returned by OpenWriter. A goroutine runs
// jlaffaye's StorFrom, whose source (feed) hands over each Write's bytes
// or each ReadFrom's reader to the data connection.
type writer struct {
	s       *Session
	ctx     context.Context
	f       failure
	jobs    chan job
	results chan jobResult
	started chan struct{} // closed when the server accepted the transfer
	done    chan struct{} // closed when StorFrom has returned
	result  error         // StorFrom's error, valid after done
	sent    atomic.Int64  // bytes accepted by the data connection
	accept  atomic.Bool

	werr     error // sticky Write/ReadFrom error
	closed   bool
	closeErr error
}

var (
	_ protocol.Writer = (*writer)(nil)
	_ io.ReaderFrom   = (*writer)(nil)
)

func (w *writer) run(path string, offset int64) {
	defer close(w.done)
	w.result = w.s.c.StorFrom(path, feed{w}, uint64(offset))
}

func (w *writer) failure() failure {
	f := w.s.verbOf(w.f)
	f.started = w.accept.Load()
	return f
}

// feed is the io.Reader given to StorFrom. It implements io.WriterTo, which
// io.Copy prefers: WriteTo is called with the data connection once the
// server answered 150, and serves jobs until Close or an abort.
type feed struct{ w *writer }

var _ io.WriterTo = feed{}

// Read is never used (io.Copy calls WriteTo); it exists to satisfy io.Reader.
func (feed) Read([]byte) (int, error) { return 0, errors.New("ftp: feed.Read called") }

func (fd feed) WriteTo(dst io.Writer) (int64, error) {
	w := fd.w
	w.accept.Store(true)
	close(w.started)
	var total int64
	for {
		select {
		case j := <-w.jobs:
			if j.eof {
				return total, nil
			}
			var n int64
			var err error
			if j.r != nil {
				if rf, ok := dst.(io.ReaderFrom); ok {
					n, err = rf.ReadFrom(j.r)
				} else {
					n, err = io.Copy(dst, j.r)
				}
			} else {
				var m int
				m, err = dst.Write(j.p)
				n = int64(m)
			}
			total += n
			w.results <- jobResult{n: n, err: err}
			if err != nil {
				return total, err
			}
		case <-w.s.dead:
			return total, errAborted
		}
	}
}

// Acked returns the bytes, counted from the open offset, that the data
// connection accepted. FTP acknowledges nothing per write, so this is only
// an upper bound of what the server stored.
func (w *writer) Acked() int64 { return w.sent.Load() }

func (w *writer) do(j job) (int64, error) {
	if w.closed {
		return 0, &protocol.Error{Op: w.f.op, Path: w.f.path, Err: errClosed}
	}
	if w.werr != nil {
		return 0, w.werr
	}
	if w.ctx.Err() != nil {
		w.werr = w.s.wrapErr(w.ctx, w.f, w.ctx.Err())
		return 0, w.werr
	}
	select {
	case w.jobs <- j:
	case <-w.done:
		w.werr = w.s.wrapErr(w.ctx, w.failure(), w.result)
		if w.werr == nil {
			w.werr = &protocol.Error{Op: w.f.op, Path: w.f.path, Kind: protocol.ErrTransient, Err: errAborted}
		}
		return 0, w.werr
	}
	res := <-w.results
	if res.err != nil {
		w.werr = w.s.wrapErr(w.ctx, w.failure(), res.err)
	}
	return res.n, w.werr
}

// Write hands p to the data connection.
func (w *writer) Write(p []byte) (int, error) {
	if len(p) == 0 && w.werr == nil && !w.closed {
		return 0, nil
	}
	n, err := w.do(job{p: p})
	return int(n), err
}

// ReadFrom copies r to the data connection until io.EOF; an *os.File is
// sent by the kernel.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	return w.do(job{r: r})
}

// Close ends the data stream and waits for the server's final reply; it
// returns nil only when the server confirmed the transfer (226) and the
// writer's ctx was not cancelled. Once ctx is cancelled, Close aborts the
// transfer instead of ending the stream, and returns an error matching
// context.Cause(ctx); so does a cancellation that arrives while Close waits.
// The session is unusable afterwards in both cases.
func (w *writer) Close() error {
	if w.closed {
		return w.closeErr
	}
	w.closed = true
	// Do not leave the abort to ctx's AfterFunc: it runs in a goroutine
	// of its own, and ending the stream before it runs lets the server
	// confirm the upload (226), which Close would report as a success.
	if !w.s.abortIfCancelled(w.ctx) {
		select {
		case w.jobs <- job{eof: true}:
		case <-w.done:
		}
	}
	<-w.done
	w.s.clearDeadline()
	f := w.failure()
	w.closeErr = w.s.fail(w.ctx, f, w.result)
	if w.s.end() && w.closeErr == nil {
		// ctx was cancelled after the stream ended: the 226 may have
		// come first, but ctx bounds the writer's whole life and the
		// session is gone; the cancellation wins, as in wrapErr.
		w.closeErr = f.wrap(context.Cause(w.ctx))
	}
	return w.closeErr
}
