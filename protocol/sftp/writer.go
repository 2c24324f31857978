package sftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
)

// Uploads.
//
// A writer keeps up to WithConcurrency WRITE requests in flight, and sends
// them in offset order from one goroutine (the caller's) on the session's
// data channel (see OpenReader), while another goroutine reads the
// acknowledgements: a server that accepts writes only in order (one that
// streams the upload into an object) sees them in order. Each request's
// buffer is kept until every byte before it is acknowledged too, so that a
// write can be sent again.
//
// Some servers still refuse a write that arrives while others are in
// flight (those that handle requests concurrently and write in order). A
// write that fails with a status (other than a full disk or quota) while
// it was not alone on the wire (an earlier request was unacknowledged,
// or a later one was sent before its reply came) is therefore not taken
// as the writer's failure at once: the writer waits for the requests in
// flight, then sends every write that failed again, in order, one at a
// time, each alone on the wire. If that succeeds the server needs one
// request at a time: the session remembers it and its writers send one
// request at a time from then on (logged once, at Info). If it fails
// too, it is the writer's failure (Acked is the contiguous mark as
// always), and the session stays as it was.
//
// Where the server refuses a second channel, requests go through pkg/sftp
// on the main channel, from a goroutine each (they may reach the server
// out of order); the fallback above covers servers that refuse that.

// SFTP packet types, open flags and attribute flags used by the writer.
const (
	fxpWrite    = 6
	fxpSetstat  = 9
	fxpFsetstat = 10
	fxpStat     = 17

	fxfWrite = 0x2
	fxfCreat = 0x8
	fxfTrunc = 0x10

	// maxHandle bounds the handle a server may hand out (the protocol
	// says 256 bytes).
	maxHandle = 256
)

// OpenWriter opens path for writing at offset. It never uses
// SSH_FXF_APPEND: the file is opened write-only and created if missing
// (truncated when offset is 0), its size is checked (offset must not exceed
// it) and cut back to offset, removing any stale tail, and every write
// names its offset explicitly.
//
// A server that truncates the file whenever it is opened for writing,
// whatever the flags ask, cannot resume: when the file held at least
// offset bytes before the open and fewer after it, OpenWriter fails with
// an error matching protocol.ErrResumeUnsupported (the file is then
// empty: start again from zero). So it does when the server refuses an
// empty write at offset while it takes one at 0: a server that writes each
// file it opens as one stream from its start (see probeOffset).
//
// Writes are pipelined in offset order (see above): Write copies the data
// and returns once the requests are sent, with up to WithConcurrency
// requests in flight. An error reported by the server surfaces on a later
// Write, ReadFrom or on Close. Acked returns the contiguous acknowledged
// high-water mark counted from offset: after a failure, bytes past it may
// have reached the file (holes included), so resume at offset+Acked() and
// let OpenWriter truncate there. ctx bounds the writer's whole life.
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
// A server that truncates the file when it is opened (whatever the flags
// ask) would destroy the other ranges: when the file is smaller after the
// open than before it, OpenRangeWriter fails with an error matching
// protocol.ErrResumeUnsupported, as it does at an offset > 0 when the
// server writes a file only from its start (see OpenWriter).
//
// The writer pipelines like OpenWriter's; Acked is the contiguous
// acknowledged high-water mark counted from offset. After a failure,
// bytes past offset+Acked() may have reached the file: resume the range
// there (the bytes are overwritten). ctx bounds the writer's whole life.
func (s *Session) OpenRangeWriter(ctx context.Context, path string, offset int64) (protocol.Writer, error) {
	return s.openWriter(ctx, path, offset, true)
}

// errTruncatedOnOpen is the cause of the ErrResumeUnsupported error of a
// server that truncated a file opened without O_TRUNC; errNoSeek that of
// one that refuses to write at an offset.
var (
	errTruncatedOnOpen = errors.New("the server truncated the file when it was opened for writing, which it was not asked to: it cannot resume (or write ranges)")
	errNoSeek          = errors.New("the server writes a file it opened only from its start: it cannot resume (or write ranges)")
)

// probeOffset finds out whether the server writes at offset (> 0) in the
// file f it opened. Some servers write each file opened as one stream
// from its start (rclone serve sftp without a VFS cache, object stores):
// they open the file, show its old size, take the truncation, and refuse
// only the writes ("Illegal seek"), then replace the file with what the
// handle wrote when it is closed. An empty WRITE at offset tells them
// apart: when the server refuses it while it takes one at 0, it cannot
// write at an offset, and the error matches protocol.ErrResumeUnsupported.
// A server that refuses both (it takes no empty write) tells nothing: the
// writer goes on. An empty write changes no byte and does not extend the
// file on the servers seen.
func (s *Session) probeOffset(f wfile, path string, offset int64) error {
	err := f.probeWrite(offset)
	if err == nil || !mayBeOrder(err) {
		return err
	}
	if err0 := f.probeWrite(0); err0 != nil {
		if !mayBeOrder(err0) {
			return err0
		}
		s.log.Debug("sftp: the server refuses empty writes; whether it writes at an offset is found out by writing",
			"path", path, "err", err)
		return nil
	}
	s.log.Warn("sftp: the server refused to write at an offset of a file it opened: it cannot resume",
		"path", path, "offset", offset, "err", err)
	return shown(&protocol.Error{Op: "open", Path: path, Kind: protocol.ErrResumeUnsupported,
		Err: fmt.Errorf("%w: an empty write at %d was refused (%w), one at 0 taken", errNoSeek, offset, err)}, s.opts.password)
}

// openWriter opens path for writing at offset: for a range writer with
// O_WRONLY|O_CREATE only, else as OpenWriter documents (truncation at 0,
// size check and cut back to offset).
func (s *Session) openWriter(ctx context.Context, path string, offset int64, ranged bool) (protocol.Writer, error) {
	stop, err := s.beginOpen(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	fail := func(f wfile, err error) (protocol.Writer, error) {
		if f != nil {
			f.abandon()
		}
		return nil, s.openFailed(ctx, path, nil, stop, err)
	}
	// The size before the open tells a server that truncates on every
	// open from a file that was short already. -1: no file.
	before := int64(-1)
	if offset > 0 || ranged {
		fi, err := s.client.Stat(path)
		switch {
		case err == nil:
			if before = fi.Size(); before < 0 {
				return fail(nil, checkSize(before))
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fail(nil, err)
		}
	}
	flags := openFlags(offset)
	if ranged {
		flags = rangeFlags
	}
	var f wfile
	if fc := s.takeDataChannel(); fc != nil {
		f, err = s.openChannelFile(fc, path, flags)
	} else {
		var pf *sftp.File
		if pf, err = s.client.OpenFile(path, flags); err == nil {
			f = &pkgFile{s: s, f: pf}
		}
	}
	if err != nil {
		return fail(f, err)
	}
	if offset > 0 || ranged && before > 0 {
		size, err := f.size()
		if err != nil {
			return fail(f, err)
		}
		if err := checkSize(size); err != nil {
			return fail(f, err)
		}
		truncated := size < offset && before >= offset
		if ranged {
			truncated = size < before
		}
		switch {
		case truncated:
			s.log.Warn("sftp: the server truncated a file opened for writing without O_TRUNC: it cannot resume",
				"path", path, "offset", offset, "size_before", before, "size_after", size)
			return fail(f, shown(&protocol.Error{Op: "open", Path: path, Kind: protocol.ErrResumeUnsupported,
				Err: fmt.Errorf("%w (%d bytes before the open, %d after)", errTruncatedOnOpen, before, size)}, s.opts.password))
		case !ranged && size < offset:
			return fail(f, fmt.Errorf("offset %d is past the end of the file (%d bytes): it would leave a hole", offset, size))
		}
		if !ranged && size > offset {
			if err := f.truncate(offset); err != nil {
				if _, kind := kindOf(err); kind != protocol.ErrUnsupported {
					return fail(f, err)
				}
				// fsetstat refused: try setstat on the path.
				if err := f.truncatePath(path, offset); err != nil {
					return fail(f, err)
				}
			}
		}
		// After the cut: a server that writes only at the end of a file
		// takes the probe.
		if err := s.probeOffset(f, path, offset); err != nil {
			return fail(f, err)
		}
	}
	depth := s.opts.concurrency
	limit := depth
	if s.seqWrites.Load() {
		limit = 1
	}
	w := &writer{
		s:     s,
		ctx:   ctx,
		f:     f,
		path:  path,
		base:  offset,
		chunk: s.opts.packetSize,
		hdr:   f.headerRoom(),
		slots: make([]*wslot, depth),
		limit: limit,
		stop:  stop,
	}
	w.cond.L = &w.mu
	f.start(w)
	return w, nil
}

// wfile is a file open for writing and the way its requests reach the
// server: on the data channel (chanFile) or through pkg/sftp (pkgFile).
type wfile interface {
	// size returns the size of the open file (fstat).
	size() (int64, error)
	// truncate sets its size (fsetstat); truncatePath sets the size of
	// path (setstat).
	truncate(size int64) error
	truncatePath(path string, size int64) error
	// probeWrite sends an empty WRITE at off and waits for its reply.
	probeWrite(off int64) error
	// headerRoom is how many bytes to leave free before the data in a
	// request buffer.
	headerRoom() int
	// start begins delivering the outcome of requests to w.complete.
	start(w *writer)
	// send sends the WRITE of s; its outcome goes to w.complete. An
	// error means the request was not sent and the file is unusable.
	send(s *wslot) error
	// close waits for the outcome of every request sent (the caller
	// has seen them all, or the connection is broken) and closes the
	// file. inStep: every reply was read.
	close(inStep bool) error
	// abandon closes the file after a failed open.
	abandon()
}

// slot states.
const (
	slotFree = iota
	slotSent
	slotOK
	slotFailed
)

// wslot is one write request and its buffer.
type wslot struct {
	buf   []byte // headerRoom bytes, then the data
	seq   int64  // request sequence number
	off   int64  // relative to the writer's base
	n     int    // data bytes
	id    uint32 // request id on the data channel
	state int
	// crowded: sent while other requests were in flight; alone: sent
	// again by recover, alone on the wire.
	crowded, alone bool
}

// writer is the protocol.Writer returned by OpenWriter and
// OpenRangeWriter. Write, ReadFrom and Close are called from one
// goroutine; Acked may be called from any.
type writer struct {
	s     *Session
	ctx   context.Context
	f     wfile
	path  string
	base  int64
	chunk int
	hdr   int
	stop  func() bool

	acked atomic.Int64 // contiguous acknowledged bytes from base

	mu    sync.Mutex
	cond  sync.Cond // signalled on every outcome
	slots []*wslot  // ring: request seq uses slots[seq % len]
	// head is the seq of the first request not acknowledged, next the
	// seq of the next request to send: [head, next) hold data.
	head, next int64
	nextOff    int64 // relative offset of the next byte to send
	inflight   int   // requests sent and not answered
	limit      int   // requests allowed in flight
	// recovering: a pipelined write failed; once nothing is in flight,
	// the failed writes are sent again one at a time.
	recovering bool
	err        error // first failure of the writer
	errOff     int64 // its relative offset
	broken     bool  // the transport failed: no more replies will come
	byID       map[uint32]*wslot

	closed   bool
	reported error // classified failure, once computed
}

var (
	_ protocol.Writer = (*writer)(nil)
	_ io.ReaderFrom   = (*writer)(nil)
)

// Acked returns the bytes from the open offset that the server has
// acknowledged contiguously.
func (w *writer) Acked() int64 { return w.acked.Load() }

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

// fail records the writer's first failure. w.mu must be held.
func (w *writer) fail(err error, off int64) {
	if w.err == nil {
		w.err, w.errOff = err, off
	}
}

// breakDown records a transport failure: no reply is due any more. w.mu
// must be held.
func (w *writer) breakDown(err error) {
	w.fail(err, w.nextOff)
	w.broken = true
	w.cond.Broadcast()
}

func (w *writer) slot(seq int64) *wslot { return w.slots[seq%int64(len(w.slots))] }

// complete records the outcome of request s. w.mu must be held.
func (w *writer) complete(s *wslot, err error) {
	w.inflight--
	defer w.cond.Broadcast()
	if err == nil {
		s.state = slotOK
		for w.head < w.next {
			h := w.slot(w.head)
			if h.state != slotOK {
				break
			}
			h.state = slotFree
			w.acked.Add(int64(h.n))
			w.head++
		}
		return
	}
	s.state = slotFailed
	if w.err != nil {
		return
	}
	// A request that was not alone on the wire (others were in flight
	// when it was sent, or a later one was sent before its reply came)
	// may have been refused for that.
	if !s.alone && (s.crowded || s.seq < w.next-1) && mayBeOrder(err) {
		if !w.recovering {
			w.s.log.Debug("sftp: a write sent while others were in flight failed; sending the failed writes again one at a time",
				"path", w.path, "offset", w.base+s.off, "err", err)
		}
		w.recovering = true
		return
	}
	w.fail(err, s.off)
}

// mayBeOrder reports whether a failed write may have been refused for
// arriving while others were in flight: a status reply, other than a full
// disk or quota.
func mayBeOrder(err error) bool {
	code, _ := kindOf(err)
	switch {
	case code == fxNoSpaceOnFS || code == fxQuotaExceeded:
		return false
	case errors.As(err, new(*fxStatusError)), errors.As(err, new(*sftp.StatusError)):
		return true
	}
	return false
}

// settle waits until a request may be sent (room in the window, or with
// room also set a free buffer), running the recovery when it is due. It
// returns false when the writer has failed. w.mu must be held.
func (w *writer) settle(room bool) bool {
	for {
		switch {
		case w.err != nil || w.broken:
			return false
		case w.recovering:
			if w.inflight == 0 {
				w.recover()
				continue
			}
		case room && w.next-w.head >= int64(len(w.slots)):
		case !room && w.inflight >= w.limit:
		default:
			return true
		}
		w.cond.Wait()
	}
}

// recover sends the writes that failed, in order, one at a time; nothing
// is in flight. The first success proves that the server needs one
// request at a time: the writer and its session send one at a time from
// then on. A failure is final. w.mu must be held.
func (w *writer) recover() {
	w.recovering = false
	proven := false
	for seq := w.head; seq < w.next; seq++ {
		s := w.slot(seq)
		if s.state != slotFailed {
			continue
		}
		// Everything before s is acknowledged and nothing else is in
		// flight: a failure now is final.
		s.alone = true
		if !w.sendLocked(s) {
			return
		}
		for s.state == slotSent && !w.broken {
			w.cond.Wait()
		}
		if s.state == slotFailed || w.broken {
			return
		}
		if !proven {
			proven = true
			w.limit = 1
			if w.s.seqWrites.CompareAndSwap(false, true) {
				w.s.log.Info("sftp: the server refused writes sent while others were in flight and accepted them one at a time: this session writes one request at a time from now on",
					"path", w.path, "offset", w.base+s.off)
			}
		}
	}
}

// sendLocked sends s; w.mu is held and released during the send. It
// returns false when the transport failed.
func (w *writer) sendLocked(s *wslot) bool {
	s.state = slotSent
	s.crowded = w.inflight > 0
	w.inflight++
	w.mu.Unlock()
	err := w.f.send(s)
	w.mu.Lock()
	if err != nil {
		w.breakDown(err)
		return false
	}
	return true
}

// buffer returns the buffer of the next request, waiting for one to be
// free; nil when the writer has failed.
func (w *writer) buffer() *wslot {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.settle(true) {
		return nil
	}
	s := w.slot(w.next)
	if s == nil {
		s = &wslot{buf: make([]byte, w.hdr+w.chunk)}
		w.slots[w.next%int64(len(w.slots))] = s
	}
	return s
}

// submit sends the n bytes filled into s at the next offset, once the
// window allows it.
func (w *writer) submit(s *wslot, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.settle(false) {
		return
	}
	s.seq, s.off, s.n, s.alone = w.next, w.nextOff, n, false
	w.next++
	w.nextOff += int64(n)
	w.sendLocked(s)
}

var errWriterClosed = errors.New("write after Close")

// Write sends p. It returns an error once a request has failed (then n
// counts the bytes sent before).
func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, &protocol.Error{Op: "write", Path: w.path, Err: errWriterClosed}
	}
	var n int
	for len(p) > 0 {
		s := w.buffer()
		if s == nil {
			return n, w.failed()
		}
		c := copy(s.buf[w.hdr:w.hdr+w.chunk], p)
		w.submit(s, c)
		p = p[c:]
		n += c
	}
	return n, w.failed()
}

// ReadFrom sends everything r yields, reading it straight into request
// buffers. It returns the bytes read from r; a failed request or a read
// error from r ends it.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if w.closed {
		return 0, &protocol.Error{Op: "write", Path: w.path, Err: errWriterClosed}
	}
	var total int64
	for {
		s := w.buffer()
		if s == nil {
			return total, w.failed()
		}
		n, err := readFull(r, s.buf[w.hdr:w.hdr+w.chunk])
		if n > 0 {
			total += int64(n)
			w.submit(s, n)
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

// Close waits for every request in flight (sending failed writes again
// where that is due), closes the remote file and reports the first error:
// a failed write, else a failed close. Only when it returns nil has the
// server acknowledged every byte.
func (w *writer) Close() error {
	if w.closed {
		return w.reported
	}
	w.closed = true
	w.mu.Lock()
	for !w.broken && (w.inflight > 0 || w.recovering && w.err == nil) {
		if w.inflight == 0 {
			w.recover()
			continue
		}
		w.cond.Wait()
	}
	inStep := !w.broken
	w.mu.Unlock()
	werr := w.failed()
	cerr := w.f.close(inStep)
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

// pkgFile writes through pkg/sftp on the main channel: one goroutine per
// request.
type pkgFile struct {
	s  *Session
	f  *sftp.File
	w  *writer
	wg sync.WaitGroup
}

func (p *pkgFile) size() (int64, error) {
	fi, err := p.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (p *pkgFile) truncate(size int64) error { return p.f.Truncate(size) }

func (p *pkgFile) truncatePath(path string, size int64) error {
	return p.s.client.Truncate(path, size)
}

func (p *pkgFile) probeWrite(off int64) error {
	_, err := p.f.WriteAt(nil, off)
	return err
}

func (p *pkgFile) headerRoom() int { return 0 }
func (p *pkgFile) start(w *writer) { p.w = w }

func (p *pkgFile) send(s *wslot) error {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		// One request: n <= packet size, so pkg/sftp sends one
		// SSH_FXP_WRITE at this explicit offset.
		_, err := p.f.WriteAt(s.buf[:s.n], p.w.base+s.off)
		p.w.mu.Lock()
		p.w.complete(s, err)
		p.w.mu.Unlock()
	}()
	return nil
}

func (p *pkgFile) close(bool) error {
	p.wg.Wait()
	return p.f.Close()
}

func (p *pkgFile) abandon() { _ = p.f.Close() }

// chanFile writes on the session's data channel: requests are sent by the
// caller's goroutine, in order, and replies read by a goroutine of its own.
type chanFile struct {
	s      *Session
	fc     *fxpConn
	handle string
	w      *writer
	hdr    []byte // the header of a WRITE but for id, offset and length
	// closeID is the id of the CLOSE request once sent; the reply
	// reader stops after its reply. Guarded by w.mu.
	closeID  uint32
	closing  bool
	closeErr error
	done     chan struct{} // closed when the reply reader has returned
}

// openChannelFile opens path with the os flags on the data channel fc.
// On failure fc is handed back (or dropped when out of step).
func (s *Session) openChannelFile(fc *fxpConn, path string, flags int) (wfile, error) {
	pflags := uint32(fxfWrite)
	if flags&os.O_CREATE != 0 {
		pflags |= fxfCreat
	}
	if flags&os.O_TRUNC != 0 {
		pflags |= fxfTrunc
	}
	b := appendString(nil, path)
	b = binary.BigEndian.AppendUint32(b, pflags)
	b = binary.BigEndian.AppendUint32(b, 0) // no attributes
	typ, body, err := fc.call(fxpOpen, b)
	if err == nil && typ != fxpHandle {
		err = fmt.Errorf("%w: packet type %d in reply to OPEN", errReadChannel, typ)
	}
	var handle string
	if err == nil {
		r := &fxpReader{b: body[4:]}
		handle = r.string()
		if r.err != nil || len(handle) > maxHandle {
			err = fmt.Errorf("%w: HANDLE of %d bytes", errReadChannel, len(handle))
		}
	}
	if err != nil {
		s.releaseDataChannel(fc, errors.As(err, new(*fxStatusError)))
		return nil, err
	}
	hdr := binary.BigEndian.AppendUint32(nil, 0) // length
	hdr = append(hdr, fxpWrite)
	hdr = binary.BigEndian.AppendUint32(hdr, 0) // id
	hdr = appendString(hdr, handle)
	return &chanFile{s: s, fc: fc, handle: handle, hdr: hdr, done: make(chan struct{})}, nil
}

// call sends one request whose body (after the id) is b and reads its
// reply: a STATUS other than OK is an *fxStatusError.
func (f *fxpConn) call(typ byte, b []byte) (byte, []byte, error) {
	id := f.nextID()
	if err := f.send(typ, append(binary.BigEndian.AppendUint32(nil, id), b...)); err != nil {
		return 0, nil, err
	}
	return f.recvReply(id)
}

func (c *chanFile) size() (int64, error) {
	typ, body, err := c.fc.call(fxpFstat, appendString(nil, c.handle))
	if err != nil {
		return 0, err
	}
	if typ != fxpAttrs {
		return 0, fmt.Errorf("%w: packet type %d in reply to FSTAT", errReadChannel, typ)
	}
	r := &fxpReader{b: body[4:]}
	if r.uint32()&attrSize == 0 || r.err != nil || len(r.b) < 8 {
		return 0, fmt.Errorf("%w: ATTRS without a size", errReadChannel)
	}
	// A size of 2^63 or more comes out negative: checkSize refuses it.
	return int64(binary.BigEndian.Uint64(r.b)), nil
}

// sizeAttrs are ATTRS that set the size only.
func sizeAttrs(b []byte, size int64) []byte {
	b = binary.BigEndian.AppendUint32(b, attrSize)
	return binary.BigEndian.AppendUint64(b, uint64(size))
}

func (c *chanFile) truncate(size int64) error {
	_, _, err := c.fc.call(fxpFsetstat, sizeAttrs(appendString(nil, c.handle), size))
	return err
}

func (c *chanFile) truncatePath(path string, size int64) error {
	_, _, err := c.fc.call(fxpSetstat, sizeAttrs(appendString(nil, path), size))
	return err
}

func (c *chanFile) probeWrite(off int64) error {
	b := binary.BigEndian.AppendUint64(appendString(nil, c.handle), uint64(off))
	_, _, err := c.fc.call(fxpWrite, binary.BigEndian.AppendUint32(b, 0))
	return err
}

func (c *chanFile) headerRoom() int { return len(c.hdr) + 12 }

func (c *chanFile) start(w *writer) {
	c.w = w
	w.byID = make(map[uint32]*wslot, len(w.slots))
	go c.readReplies()
}

// send writes the WRITE request of s, header and data in one piece.
func (c *chanFile) send(s *wslot) error {
	b := s.buf[:c.headerRoom()+s.n]
	copy(b, c.hdr)
	h := len(c.hdr)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	binary.BigEndian.PutUint64(b[h:], uint64(c.w.base+s.off))
	binary.BigEndian.PutUint32(b[h+8:], uint32(s.n))
	c.w.mu.Lock()
	s.id = c.fc.nextID()
	binary.BigEndian.PutUint32(b[5:], s.id)
	c.w.byID[s.id] = s
	c.w.mu.Unlock()
	_, err := c.fc.w.Write(b)
	return err
}

// readReplies reads the replies to the writes, and last the one to CLOSE.
func (c *chanFile) readReplies() {
	defer close(c.done)
	w := c.w
	for {
		typ, body, err := c.fc.recv()
		if err == nil && typ != fxpStatus {
			err = fmt.Errorf("%w: packet type %d in reply to WRITE", errReadChannel, typ)
		}
		var id uint32
		var status error
		if err == nil {
			r := &fxpReader{b: body}
			id = r.uint32()
			code := r.uint32()
			if r.err != nil {
				err = fmt.Errorf("%w: STATUS: %v", errReadChannel, r.err)
			} else if code != 0 {
				status = &fxStatusError{Code: code, Msg: r.string()} // the message is absent in some old servers' replies
			}
		}
		w.mu.Lock()
		if err == nil && c.closing && id == c.closeID {
			c.closeErr = status
			w.mu.Unlock()
			return
		}
		s := w.byID[id]
		if err == nil && s == nil {
			err = fmt.Errorf("%w: reply to unknown request %d", errReadChannel, id)
		}
		if err != nil {
			w.breakDown(err)
			w.mu.Unlock()
			return
		}
		delete(w.byID, id)
		w.complete(s, status)
		w.mu.Unlock()
	}
}

// close sends CLOSE, waits for the reply reader to read its reply and
// hands the channel back; out of step, it drops the channel instead
// (which ends the reply reader).
func (c *chanFile) close(inStep bool) error {
	var err error
	if inStep {
		c.w.mu.Lock()
		id := c.fc.nextID()
		c.closeID, c.closing = id, true
		c.w.mu.Unlock()
		if err = c.fc.send(fxpClose, appendString(binary.BigEndian.AppendUint32(nil, id), c.handle)); err == nil {
			<-c.done // after CLOSE's reply, or a failure
			c.w.mu.Lock()
			if inStep = !c.w.broken; inStep {
				err = c.closeErr
			} else {
				err = c.w.err
			}
			c.w.mu.Unlock()
		} else {
			inStep = false
		}
	}
	c.s.releaseDataChannel(c.fc, inStep && (err == nil || errors.As(err, new(*fxStatusError))))
	<-c.done
	if err == nil && !inStep {
		c.w.mu.Lock()
		err = c.w.err
		c.w.mu.Unlock()
	}
	return err
}

func (c *chanFile) abandon() {
	if c.w != nil {
		return // started: closed through close
	}
	_, _, err := c.fc.call(fxpClose, appendString(nil, c.handle))
	c.s.releaseDataChannel(c.fc, err == nil || errors.As(err, new(*fxStatusError)))
}
