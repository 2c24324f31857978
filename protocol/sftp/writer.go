package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
)

// OpenWriter opens path for writing at offset. It never uses
// SSH_FXF_APPEND: the file is opened write-only and created if missing
// (truncated when offset is 0), its size is checked (offset must not exceed
// it) and cut back to offset, removing any stale tail, and every write
// names its offset explicitly.
//
// Writes are pipelined: Write copies the data and returns once the
// requests are queued, with up to WithConcurrency requests in flight. An
// error reported by the server surfaces on a later Write, ReadFrom or on
// Close. Acked returns the contiguous acknowledged high-water mark counted
// from offset: after a failure, bytes past it may have reached the file
// (holes included), so resume at offset+Acked() and let OpenWriter
// truncate there. ctx bounds the writer's whole life.
func (s *Session) OpenWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return s.openWriter(ctx, path, offset, false)
}

// OpenRangeWriter opens path for writing at offset without cutting it: the
// file is opened write-only and created if missing, never truncated and
// never in append mode, and every write names its offset explicitly, so
// bytes outside the range written stay as they are. offset may lie past
// the end of the file (the gap reads as zeros until written). Writers on
// several sessions may fill disjoint ranges of one file at once.
//
// The writer pipelines like OpenWriter's; Acked is the contiguous
// acknowledged high-water mark counted from offset. After a failure,
// bytes past offset+Acked() may have reached the file: resume the range
// there (the bytes are overwritten). ctx bounds the writer's whole life.
func (s *Session) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return s.openWriter(ctx, path, offset, true)
}

// openWriter opens path for writing at offset: for a range writer with
// O_WRONLY|O_CREATE only, else as OpenWriter documents (truncation at 0,
// size check and cut back to offset).
func (s *Session) openWriter(ctx context.Context, path string, offset int64, ranged bool) (protocol.Writer, error) {
	stop, err := s.beginOpen(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	fail := func(f *sftp.File, err error) (protocol.Writer, error) {
		return nil, s.openFailed(ctx, path, f, stop, err)
	}
	flags := openFlags(offset)
	if ranged {
		flags = rangeFlags
	}
	f, err := s.client.OpenFile(path, flags)
	if err != nil {
		return fail(nil, err)
	}
	if offset > 0 && !ranged {
		fi, err := f.Stat()
		if err != nil {
			return fail(f, err)
		}
		switch size := fi.Size(); {
		case size < 0:
			return fail(f, checkSize(size))
		case size < offset:
			return fail(f, fmt.Errorf("offset %d is past the end of the file (%d bytes): it would leave a hole", offset, size))
		case size > offset:
			if err := f.Truncate(offset); err != nil {
				if _, kind := kindOf(err); kind != protocol.ErrUnsupported {
					return fail(f, err)
				}
				// fsetstat refused: try setstat on the path.
				if err := s.client.Truncate(path, offset); err != nil {
					return fail(f, err)
				}
			}
		}
	}
	w := &writer{
		s:       s,
		ctx:     ctx,
		f:       f,
		path:    path,
		base:    offset,
		chunk:   s.opts.packetSize,
		sem:     make(chan struct{}, s.opts.concurrency),
		pending: make(map[int64]int64),
		stop:    stop,
	}
	w.bufs.New = func() any { b := make([]byte, w.chunk); return &b }
	return w, nil
}

// writer is the protocol.Writer returned by OpenWriter and
// OpenRangeWriter. Write and ReadFrom
// are called from one goroutine; Acked may be called from any.
type writer struct {
	s     *Session
	ctx   context.Context
	f     *sftp.File
	path  string
	base  int64
	chunk int
	sem   chan struct{} // one token per request in flight
	bufs  sync.Pool     // *[]byte of len chunk
	wg    sync.WaitGroup
	stop  func() bool

	next int64 // relative offset of the next byte to queue

	mu      sync.Mutex
	acked   int64           // contiguous acknowledged bytes from base
	pending map[int64]int64 // acknowledged ranges past acked: start -> end
	err     error           // first write failure
	errOff  int64           // its relative offset

	closed   bool
	reported error // classified failure, once computed
}

var (
	_ protocol.Writer = (*writer)(nil)
	_ io.ReaderFrom   = (*writer)(nil)
)

// Acked returns the bytes from the open offset that the server has
// acknowledged contiguously.
func (w *writer) Acked() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// failed returns the classified first failure, or nil.
func (w *writer) failed() error {
	w.mu.Lock()
	err, off := w.err, w.errOff
	w.mu.Unlock()
	if err == nil {
		if w.ctx.Err() != nil {
			return &protocol.Error{Op: "write", Path: w.path, Err: w.ctx.Err()}
		}
		return nil
	}
	if w.reported == nil {
		w.reported = w.classifyWrite(err, off)
	}
	return w.reported
}

// classifyWrite classifies a failed write request, telling a full disk
// behind a generic SSH_FX_FAILURE by the server's free space.
func (w *writer) classifyWrite(err error, off int64) error {
	if w.ctx.Err() != nil {
		return &protocol.Error{Op: "write", Path: w.path, Err: w.ctx.Err()}
	}
	err = fmt.Errorf("at offset %d: %w", w.base+off, err)
	if w.s.noSpace(w.path, err) {
		return shown(&protocol.Error{Op: "write", Path: w.path, Code: fxFailure, Kind: protocol.ErrNoSpace, Err: err}, w.s.opts.password)
	}
	return classify("write", w.path, err, w.s.opts.password)
}

// submit queues buf[:n] at the next offset; it blocks while the window of
// requests in flight is full. buf is returned to the pool when done.
func (w *writer) submit(bp *[]byte, n int) {
	start := w.next
	w.next += int64(n)
	w.sem <- struct{}{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		// One request: n <= packet size, so pkg/sftp sends one
		// SSH_FXP_WRITE at this explicit offset.
		_, err := w.f.WriteAt((*bp)[:n], w.base+start)
		w.complete(start, start+int64(n), err)
		w.bufs.Put(bp)
		<-w.sem
	}()
}

// complete records the outcome of the request for [start, end).
func (w *writer) complete(start, end int64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.err == nil {
			w.err, w.errOff = err, start
		}
		return
	}
	if start != w.acked {
		w.pending[start] = end
		return
	}
	w.acked = end
	for {
		e, ok := w.pending[w.acked]
		if !ok {
			break
		}
		delete(w.pending, w.acked)
		w.acked = e
	}
}

var errWriterClosed = errors.New("write after Close")

// Write queues p for writing. It returns an error once a request has failed
// (then n counts the bytes queued before).
func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, &protocol.Error{Op: "write", Path: w.path, Err: errWriterClosed}
	}
	var n int
	for len(p) > 0 {
		if err := w.failed(); err != nil {
			return n, err
		}
		bp := w.bufs.Get().(*[]byte)
		c := copy(*bp, p)
		w.submit(bp, c)
		p = p[c:]
		n += c
	}
	return n, nil
}

// ReadFrom queues everything r yields, reading it straight into request
// buffers. It returns the bytes read from r; a failed request or a read
// error from r ends it.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if w.closed {
		return 0, &protocol.Error{Op: "write", Path: w.path, Err: errWriterClosed}
	}
	var total int64
	for {
		if err := w.failed(); err != nil {
			return total, err
		}
		bp := w.bufs.Get().(*[]byte)
		n, err := readFull(r, *bp)
		if n > 0 {
			total += int64(n)
			w.submit(bp, n)
		} else {
			w.bufs.Put(bp)
		}
		switch {
		case err == io.EOF:
			return total, w.failed()
		case err != nil:
			return total, err
		}
	}
}

// readFull reads into b until it is full or r fails; unlike io.ReadFull it
// returns r's error unchanged (io.EOF after a partial read stays io.EOF).
func readFull(r io.Reader, b []byte) (n int, err error) {
	for n < len(b) && err == nil {
		var m int
		m, err = r.Read(b[n:])
		n += m
	}
	return n, err
}

// Close waits for every request in flight, closes the remote file and
// reports the first error: a failed write, else a failed close. Only when
// it returns nil has the server acknowledged every byte.
func (w *writer) Close() error {
	if w.closed {
		return w.reported
	}
	w.closed = true
	w.wg.Wait()
	werr := w.failed()
	cerr := w.f.Close()
	if werr == nil && cerr != nil {
		if w.ctx.Err() != nil {
			werr = &protocol.Error{Op: "close", Path: w.path, Err: w.ctx.Err()}
		} else if w.s.noSpace(w.path, cerr) {
			werr = shown(&protocol.Error{Op: "close", Path: w.path, Code: fxFailure, Kind: protocol.ErrNoSpace, Err: cerr}, w.s.opts.password)
		} else {
			werr = classify("close", w.path, cerr, w.s.opts.password)
		}
	}
	// A context cancelled after the last acknowledgement leaves the data
	// written (werr stays nil) but the Session gone.
	w.stop()
	w.reported = werr
	return werr
}
