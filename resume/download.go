package resume

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/openhaul/haul/protocol"
)

// LocalFile is the destination of a download: an *os.File satisfies it.
// Its current size is the resume point.
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
// Each attempt resumes at dst's current size, after checking that the
// remote file still has the size and modification time it had on the first
// attempt; if it changed, the download starts again from zero rather than
// splice two versions. The resumed stream starts Config.Overlap bytes
// early and those bytes must equal dst's tail, else the download restarts
// from zero. A dst larger than the remote file also starts again from
// zero. Success is reported only after dst was synced, its size equals the
// remote size and its content verified by Config.Verify. The error, if
// any, is an *Error.
func Download(ctx context.Context, dial protocol.Dialer, remotePath string, dst LocalFile, cfg Config) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{}, &Error{Op: "download", Path: remotePath, Err: err}
	}
	cfg = cfg.withLimiter()
	var pending protocol.Session
	if cfg.StatePath != "" && cfg.Segments != 1 {
		res, done, first, err := maybeSegmented(ctx, dial, remotePath, dst, cfg)
		if done {
			return res, err
		}
		pending = first
	}
	d := &download{dst: dst, path: remotePath, size: -1}
	r := newRunner("download", remotePath, dial, cfg)
	r.pending = pending
	r.res.StartOffset = -1
	r.committed = func() int64 { n, _ := d.localSize(); return n }
	return r.run(ctx, d.attempt)
}

// maybeSegmented runs a segmented download when a state file from an
// earlier segmented run exists or the file and link call for one; done is
// false when a single stream should be used, which may go on with the
// returned logged-in session (first).
func maybeSegmented(ctx context.Context, dial protocol.Dialer, path string, dst LocalFile, cfg Config) (res Result, done bool, first protocol.Session, err error) {
	st, stErr := loadSidecar(cfg.StatePath)
	local, _ := dst.Stat()
	if stErr != nil && local != nil && local.Size() > 0 {
		return Result{}, false, nil, nil // a single-stream partial: resume it as such
	}
	// With a segment count asked for, the other ranges log in while the
	// probe runs.
	pre := startPredial(ctx, dial, cfg.Segments-1)
	info, rtt, first, res, err := probe(ctx, dial, path, cfg)
	if err != nil {
		pre.closeAll()
		return res, true, nil, err
	}
	n := chooseSegments(cfg, info.Size, rtt)
	if stErr == nil && st.Path == path && st.Size == info.Size && st.ModTime.Equal(info.ModTime) {
		n = len(st.Segments)
	}
	if n <= 1 {
		pre.closeAll()
		_ = os.Remove(cfg.StatePath)
		return Result{}, false, first, nil
	}
	res, err = downloadSegments(ctx, dial, path, dst, info, n, first, pre, cfg)
	return res, true, nil, err
}

type download struct {
	dst  LocalFile
	path string
	// size and mtime fingerprint the remote file as first seen.
	size  int64
	mtime time.Time
}

func (d *download) localSize() (int64, error) {
	fi, err := d.dst.Stat()
	if err != nil {
		return 0, &localError{op: "stat", err: err}
	}
	return fi.Size(), nil
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
	a.dog.touch()
	local, err := d.localSize()
	if err != nil {
		return err
	}
	changed := d.size >= 0 && (info.Size != d.size || (!d.mtime.IsZero() && !info.ModTime.Equal(d.mtime)))
	d.size, d.mtime = info.Size, info.ModTime
	r.res.Size = info.Size
	if changed || local > info.Size {
		reason := "remote file changed between attempts"
		if !changed {
			reason = fmt.Sprintf("local partial (%d) is larger than the remote file (%d)", local, info.Size)
		}
		r.restart(a, reason)
		if err := d.dst.Truncate(0); err != nil {
			return &localError{op: "truncate", err: err}
		}
		local = 0
	}
	if local == info.Size {
		a.start(local)
		return d.finish(ctx, sess, a)
	}
	k := min(r.cfg.overlap(), local)
	rd, err := sess.OpenReader(ctx, d.path, local-k)
	if err != nil {
		return err
	}
	if k > 0 {
		same, err := equalStream(rd, d.dst, local-k, k, a)
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
			local = 0
			if rd, err = sess.OpenReader(ctx, d.path, 0); err != nil {
				return err
			}
		}
	}
	if local > 0 && a.n > 1 {
		r.res.Resumes++
	}
	m := a.start(local)
	var localErr error
	w := &countingWriter{w: &writebackWriter{w: &localWriter{w: io.NewOffsetWriter(d.dst, local), err: &localErr}, f: d.dst, off: local}, m: m}
	n, copyErr := copyStream(w, rd)
	closeErr := rd.Close()
	if localErr != nil {
		return localErr
	}
	if copyErr != nil {
		return copyErr
	}
	if closeErr != nil {
		return closeErr
	}
	if local+n != info.Size {
		return &protocol.Error{Op: "read", Path: d.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: stream ended at %d, remote size %d", io.ErrUnexpectedEOF, local+n, info.Size)}
	}
	return d.finish(ctx, sess, a)
}

// finish syncs dst and verifies it against the remote file.
func (d *download) finish(ctx context.Context, sess protocol.Session, a *attempt) error {
	if err := d.dst.Sync(); err != nil {
		return &localError{op: "sync", err: err}
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
	a.r.emit(Event{Kind: EventVerified, Attempt: a.n, Method: method})
	return nil
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
