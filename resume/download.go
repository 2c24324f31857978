package resume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/openhaul/haul/protocol"
)

// LocalFile is the destination of a download: an *os.File satisfies it.
type LocalFile interface {
	io.WriterAt
	io.ReaderAt
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Sync() error
}

// Download fetches remotePath into dst, resuming after failures until dst
// holds exactly the remote file.
//
// Only bytes the engine can prove are resumed. Within one call, those are
// the bytes an earlier attempt wrote from a stream whose start was proven;
// across calls (another process, after a crash), those recorded in
// Config.StatePath together with the remote file's size and modification
// time, which must not have changed, or else proven by a server-side hash
// of the partial. Anything else in dst is discarded and the download
// starts from zero. Each resumed stream starts Config.Overlap bytes early
// (more when those bytes are all one value, which proves nothing) and
// those bytes must equal dst's, else the download restarts from zero. A
// stream longer than the remote size says the server did not start where
// it was asked to (an FTP server that ignores REST): its bytes are dropped
// and the download starts again from zero, once. Success is reported only
// after dst was synced, its size equals the remote size and its content
// verified by Config.Verify. The error, if any, is an *Error.
func Download(ctx context.Context, dial protocol.Dialer, remotePath string, dst LocalFile, cfg Config) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{}, &Error{Op: "download", Path: remotePath, Err: err}
	}
	cfg = cfg.withLimiter()
	d := &download{dst: dst, path: remotePath, size: -1, proven: -1, statePath: cfg.StatePath, noSync: cfg.NoSync}
	var pending protocol.Session
	if cfg.StatePath != "" && cfg.Segments != 1 {
		res, done, first, noResume, err := maybeSegmented(ctx, dial, remotePath, dst, cfg)
		if done {
			return res, settleState(cfg.StatePath, err)
		}
		pending, d.noResume = first, noResume
	}
	r := newRunner("download", remotePath, dial, cfg)
	r.pending = pending
	r.res.StartOffset = -1
	r.committed = func() int64 { return max(d.proven, 0) }
	res, err := r.run(ctx, d.attempt)
	return res, settleState(cfg.StatePath, err)
}

// settleState removes the state file of a transfer that succeeded, or
// whose result failed verification (a partial that failed may never be
// resumed as if it were good), and keeps it otherwise.
func settleState(path string, err error) error {
	if err == nil || errors.Is(err, ErrVerify) {
		removeState(path)
	}
	return err
}

// maybeSegmented runs a segmented download when a state file from an
// earlier segmented run exists or the file and link call for one; done is
// false when a single stream should be used, which may go on with the
// returned logged-in session (first), and noResume tells it the server
// does not start a stream at the offset it is asked for.
func maybeSegmented(ctx context.Context, dial protocol.Dialer, path string, dst LocalFile, cfg Config) (res Result, done bool, first protocol.Session, noResume bool, err error) {
	st, stErr := loadSidecar(cfg.StatePath)
	if local, _ := dst.Stat(); local != nil && local.Size() > 0 && (stErr != nil || len(st.Segments) == 1) {
		return Result{}, false, nil, false, nil // a single-stream partial: the single stream proves or drops it
	}
	info, rtt, first, res, err := probe(ctx, dial, path, cfg)
	if err != nil {
		return res, true, nil, false, err
	}
	n := chooseSegments(cfg, info.Size, rtt)
	if stErr == nil && len(st.Segments) > 1 && st.matches(path, info.Size, info.ModTime, 0) {
		n = len(st.Segments)
	}
	if n <= 1 {
		_ = os.Remove(cfg.StatePath)
		return Result{}, false, first, false, nil
	}
	// The other ranges log in only now that one login succeeded (a
	// rejected password is tried once, not once per range), while the
	// offset probe runs.
	pre := startPredial(ctx, dial, n-1)
	// Every range but the first starts at an offset: the server must
	// honour one, which only the length of a stream proves whatever the
	// file holds.
	if perr := probeOffset(ctx, first, path, info.Size, cfg); perr != nil {
		pre.closeAll()
		if !errors.Is(perr, errMisaligned) {
			first.Close()
			return Result{}, true, nil, false, &Error{Op: "download", Path: path, Err: perr}
		}
		cfg.logger().Warn("the server does not read from an offset: one stream from zero", "path", path, "err", perr)
		if cfg.OnEvent != nil {
			cfg.OnEvent(Event{Kind: EventSingleStream, Reason: perr.Error()})
		}
		_ = os.Remove(cfg.StatePath)
		return Result{}, false, first, true, nil
	}
	res, err = downloadSegments(ctx, dial, path, dst, info, n, first, pre, cfg)
	return res, true, nil, false, err
}

// errMisaligned reports a stream that did not start at the offset it was
// asked for: the server ignored it (an FTP server that answers REST and
// sends from zero).
var errMisaligned = errors.New("the server did not start the stream at the offset asked for")

// probeOffset reads the last bytes of path from an offset on sess: a
// server that ignores the offset sends more than are left.
func probeOffset(ctx context.Context, sess protocol.Session, path string, size int64, cfg Config) error {
	tail := min(int64(probeChunk), size-1)
	if tail <= 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.stallTimeout())
	defer cancel()
	rd, err := sess.OpenReader(pctx, path, size-tail)
	if errors.Is(err, protocol.ErrResumeUnsupported) {
		return fmt.Errorf("%w: %w", errMisaligned, err)
	}
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(rd, tail+1))
	_ = rd.Close() // an early close aborts the stream; what was read is known
	switch {
	case n > tail:
		return fmt.Errorf("%w: asked for the last %d bytes, got more", errMisaligned, tail)
	case err != nil:
		return err
	}
	return nil
}

type download struct {
	dst       LocalFile
	path      string
	statePath string
	// noSync skips the fsync before verification (Config.NoSync).
	noSync bool
	// size and mtime fingerprint the remote file as last seen; size is -1
	// before the first attempt.
	size  int64
	mtime time.Time
	// proven is how many bytes at the start of dst are known to hold the
	// remote file's bytes; -1 before the first attempt.
	proven int64
	// saved is the Done of the state file as last written, -1 if none.
	saved int64
	// noResume is set once the server was seen to ignore an offset.
	noResume bool
	// streaming is set while a stream from a proven start writes dst.
	streaming bool
}

func (d *download) localSize() (int64, error) {
	fi, err := d.dst.Stat()
	if err != nil {
		return 0, &localError{op: "stat", err: err}
	}
	return fi.Size(), nil
}

// record makes dst durable and records that its first done bytes are the
// remote file's. It is a no-op without a state path.
func (d *download) record(done int64) error {
	if d.statePath == "" {
		return nil
	}
	if done > 0 {
		// What the record claims must be on disk before it.
		if err := d.dst.Sync(); err != nil {
			return &localError{op: "sync", err: err}
		}
	}
	if err := single(d.path, d.size, d.mtime, done, done, d.streaming).save(d.statePath); err != nil {
		return &localError{op: "write state", err: err}
	}
	d.saved = done
	return nil
}

// note records, without making anything durable, that the first written
// bytes of dst are the remote file's as long as the machine does not
// restart (they are in the page cache); done stays what was last synced.
func (d *download) note(written int64) {
	if d.statePath != "" && d.saved >= 0 {
		_ = single(d.path, d.size, d.mtime, d.saved, written, d.streaming).note(d.statePath)
	}
}

// provenAtStart returns how much of a partial left by an earlier process
// can be resumed: what its state file records for this remote file, or
// all of it when a server-side hash proves it; else 0.
func (d *download) provenAtStart(ctx context.Context, sess protocol.Session, a *attempt, local int64) (int64, error) {
	if local == 0 {
		return 0, nil
	}
	if st, err := loadSidecar(d.statePath); err == nil && st.matches(d.path, d.size, d.mtime, 1) {
		d.saved = st.Segments[0].Done
		g := st.Segments[0]
		if st.sameBoot() && g.Streaming && local >= g.Done {
			// The kernel that holds what the stream wrote still runs:
			// everything in the file is the stream's.
			return min(local, d.size), nil
		}
		return min(g.proven(st.sameBoot()), local), nil
	}
	n := min(local, d.size)
	if ok, err := a.hashProves(ctx, sess, d.path, d.dst, n); err != nil || ok {
		return n, err
	}
	a.r.restart(a, "nothing proves the local partial was written from this remote file (no matching state file)")
	return 0, nil
}

func (d *download) attempt(ctx context.Context, sess protocol.Session, a *attempt) error {
	r := a.r
	info, err := sess.Stat(ctx, d.path)
	if err != nil {
		return err
	}
	if info.IsDir {
		return &protocol.Error{Op: "stat", Path: d.path, Kind: protocol.ErrInvalidPath, Err: fmt.Errorf("is a directory")}
	}
	if info.Size < 0 {
		return &protocol.Error{Op: "stat", Path: d.path, Kind: protocol.ErrProtocol, Err: fmt.Errorf("the server reported a negative size (%d)", info.Size)}
	}
	a.dog.touch()
	local, err := d.localSize()
	if err != nil {
		return err
	}
	first := d.size < 0
	changed := !first && (info.Size != d.size || (!d.mtime.IsZero() && !info.ModTime.Equal(d.mtime)))
	d.size, d.mtime = info.Size, info.ModTime
	r.res.Size = info.Size
	if first {
		d.saved = -1
		if d.proven, err = d.provenAtStart(ctx, sess, a, local); err != nil {
			return err
		}
	}
	off := min(d.proven, local, info.Size)
	switch {
	case changed && off > 0:
		r.restart(a, "remote file changed between attempts")
		off = 0
	case d.noResume && off > 0 && off < info.Size:
		r.restart(a, "the server cannot start a stream at an offset: restarting from zero")
		off = 0
	}
	if off < local {
		if err := d.dst.Truncate(off); err != nil {
			return &localError{op: "truncate", err: err}
		}
	}
	d.proven = off
	if d.saved != off || changed || first {
		// The record names this remote file before a byte is written.
		if err := d.record(off); err != nil {
			return err
		}
	}
	if off == info.Size {
		a.start(off)
		return d.finish(ctx, sess, a)
	}
	k, informative, err := proofWindow(d.dst, off, r.cfg.overlap())
	if err != nil {
		return err
	}
	rd, err := sess.OpenReader(ctx, d.path, off-k)
	if errors.Is(err, protocol.ErrResumeUnsupported) && off-k > 0 {
		// The server cannot start at an offset: from zero, from now on.
		d.noResume = true
		r.restart(a, "the server cannot resume downloads: restarting from zero")
		if err := d.dst.Truncate(0); err != nil {
			return &localError{op: "truncate", err: err}
		}
		off, k, d.proven, informative = 0, 0, 0, false
		if err := d.record(0); err != nil {
			return err
		}
		rd, err = sess.OpenReader(ctx, d.path, 0)
	}
	if err != nil {
		return err
	}
	// A stream from zero needs no proof; a resumed one is proven by a
	// window that holds more than one byte value, else only by its length.
	aligned := off == 0 || informative
	if k > 0 {
		same, err := equalStream(rd, d.dst, off-k, k, a)
		if err != nil {
			rd.Close()
			return err
		}
		if !same {
			rd.Close()
			r.restart(a, fmt.Sprintf("the local partial's last %d bytes differ from the remote file", k))
			if err := d.dst.Truncate(0); err != nil {
				return &localError{op: "truncate", err: err}
			}
			off, d.proven, aligned = 0, 0, true
			if err := d.record(0); err != nil {
				return err
			}
			if rd, err = sess.OpenReader(ctx, d.path, 0); err != nil {
				return err
			}
		}
	}
	if off > 0 && a.n > 1 {
		r.res.Resumes++
	}
	m := a.start(off)
	var localErr error
	w := &countingWriter{w: &capWriter{n: info.Size - off, w: &writebackWriter{w: &localWriter{w: io.NewOffsetWriter(d.dst, off), err: &localErr}, f: d.dst, off: off}}, m: m}
	var cp *checkpoints
	if aligned && d.statePath != "" {
		// Recorded before the first byte: should this process die, what
		// the stream wrote is its, in order from off.
		d.streaming = true
		if err := d.record(off); err != nil {
			d.streaming = false
			return err
		}
		cp = startCheckpoints(func(full bool) {
			if full {
				_ = d.record(off + m.n.Load())
			} else {
				d.note(off + m.n.Load())
			}
		})
	}
	n, copyErr := copyStream(w, rd)
	if cp != nil {
		cp.Stop()
	}
	d.streaming = false
	closeErr := rd.Close()
	if errors.Is(copyErr, errStreamTooLong) {
		// Every byte of this stream is suspect: drop them, and never
		// trust an offset on this server again.
		d.noResume = true
		if err := d.dst.Truncate(off); err != nil {
			return &localError{op: "truncate", err: err}
		}
		_ = d.record(off)
		return &protocol.Error{Op: "read", Path: d.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: the stream from %d went on past the remote size %d", errMisaligned, off-k, info.Size)}
	}
	if aligned {
		d.proven = off + n
	}
	if err := errors.Join(localErr, copyErr, closeErr); err != nil || off+n != info.Size {
		// What this attempt proved survives a crash of this process.
		if rerr := d.record(d.proven); localErr == nil && rerr != nil {
			localErr = rerr
		}
		switch {
		case localErr != nil:
			return localErr
		case copyErr != nil:
			return copyErr
		case closeErr != nil:
			return closeErr
		}
		return &protocol.Error{Op: "read", Path: d.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: stream ended at %d, remote size %d", io.ErrUnexpectedEOF, off+n, info.Size)}
	}
	d.proven = info.Size
	return d.finish(ctx, sess, a)
}

// finish syncs dst and verifies it against the remote file.
func (d *download) finish(ctx context.Context, sess protocol.Session, a *attempt) error {
	if !d.noSync {
		if err := d.dst.Sync(); err != nil {
			return &localError{op: "sync", err: err}
		}
	}
	got, err := d.localSize()
	if err != nil {
		return err
	}
	if got != d.size {
		return &protocol.Error{Op: "verify", Path: d.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: local size %d, remote %d", ErrVerify, got, d.size)}
	}
	method, err := a.verifyContent(ctx, sess, d.path, d.dst, d.size)
	if err != nil {
		return err
	}
	a.r.res.Verified = method
	a.r.res.RemoteModTime = d.mtime
	a.r.emit(Event{Kind: EventVerified, Attempt: a.n, Method: method})
	return nil
}

// errStreamTooLong reports a stream that went on past the remote size.
var errStreamTooLong = errors.New("stream longer than the remote file")

// capWriter passes on at most n bytes; a write that would go past them
// fails with errStreamTooLong and passes nothing on.
type capWriter struct {
	w io.Writer
	n int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.n {
		return 0, errStreamTooLong
	}
	n, err := c.w.Write(p)
	c.n -= int64(n)
	return n, err
}

// writebackInterval is how many written bytes trigger an early writeback.
const writebackInterval = 16 << 20

// writebackWriter starts the kernel's writeback of what was written every
// writebackInterval bytes, so the final fsync is short.
type writebackWriter struct {
	w        io.Writer
	f        any
	off      int64 // file offset of the next byte
	unsynced int64 // bytes written since the last writeback request
}

func (w *writebackWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.off += int64(n)
	w.unsynced += int64(n)
	if w.unsynced >= writebackInterval {
		startWriteback(w.f, w.off-w.unsynced, w.unsynced)
		w.unsynced = 0
	}
	return n, err
}

// copyBufferSize is the copy buffer for streams that do not bring their
// own fast path: large enough to amortize the system calls.
const copyBufferSize = 256 << 10

// copyStream copies rd to w, through rd's WriterTo when it has one (SFTP
// files pipeline their reads there), else with a large buffer.
func copyStream(w io.Writer, rd io.Reader) (int64, error) {
	if wt, ok := rd.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.CopyBuffer(w, struct{ io.Reader }{rd}, make([]byte, copyBufferSize))
}
