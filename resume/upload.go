package resume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"

	"github.com/openhaul/haul/protocol"
)

// Source is the local side of an upload: an *os.File satisfies it. Stat
// is called before every attempt; a change of size or modification time
// restarts the upload from zero rather than splice two versions.
type Source interface {
	io.ReaderAt
	Stat() (fs.FileInfo, error)
}

// Upload sends src to remotePath, resuming after failures until the remote
// file holds exactly src's bytes.
//
// On every attempt the remote is authoritative: the attempt resumes at the
// remote file's size, lowered to the contiguous acknowledged mark of the
// previous attempt when that is smaller (concurrent SFTP writes may leave
// holes), and never past the end of the remote. Before appending, the last
// Config.Overlap bytes of the remote partial are compared with the source;
// on a mismatch, or when the remote is larger than the source, the upload
// restarts from zero. A server that refuses to resume restarts from zero
// once. With Config.TempPath set, the data goes there and is renamed to
// remotePath only after verification.
//
// Success is reported only after the sizes match and the content verified
// by Config.Verify. The error, if any, is an *Error.
func Upload(ctx context.Context, dial protocol.Dialer, src Source, remotePath string, cfg Config) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{}, &Error{Op: "upload", Path: remotePath, Err: err}
	}
	if cfg.TempPath != "" {
		if err := protocol.CheckPath(cfg.TempPath); err != nil {
			return Result{}, &Error{Op: "upload", Path: remotePath, Err: err}
		}
	}
	var pending protocol.Session
	if cfg.StatePath != "" && cfg.TempPath != "" && cfg.Segments != 1 {
		res, done, first, err := maybeSegmentedUpload(ctx, dial, src, remotePath, cfg)
		if done {
			return res, err
		}
		pending = first
	}
	u := &upload{src: src, final: remotePath, target: remotePath, safe: -1, size: -1}
	if cfg.TempPath != "" {
		u.target = cfg.TempPath
	}
	cfg = cfg.withLimiter()
	r := newRunner("upload", remotePath, dial, cfg)
	r.pending = pending
	r.res.StartOffset = -1
	// What the remote confirmed at the start of an attempt: an FTP
	// writer's acknowledgements are only an upper bound.
	r.committed = func() int64 { return max(r.best, 0) }
	return r.run(ctx, u.attempt)
}

type upload struct {
	src Source
	// size and mtime fingerprint the source as last seen.
	size  int64
	mtime time.Time
	// changes counts restarts caused by the source changing.
	changes int
	// final is the remote path; target is where the data goes (final,
	// or the temporary path).
	final, target string
	// safe is the offset up to which the remote is known to hold the
	// source's bytes, from the last attempt's acknowledgements; -1 when
	// unknown.
	safe int64
	// noResume is set once the server refused to write at an offset.
	noResume bool
	// renaming is set once the verified temporary file is being renamed.
	renaming bool
}

// checkSource re-reads the source's fingerprint; a change since the last
// attempt forgets everything known about the remote.
func (u *upload) checkSource(a *attempt) error {
	fi, err := u.src.Stat()
	if err != nil {
		return &localError{op: "stat", err: err}
	}
	if u.size >= 0 && (fi.Size() != u.size || !fi.ModTime().Equal(u.mtime)) {
		u.changes++
		if u.changes > maxSourceChanges {
			return &localError{op: "read", err: fmt.Errorf("%w: it changed %d times", ErrSourceChanged, u.changes)}
		}
		a.r.restart(a, "the source file changed")
		u.safe = 0
		u.renaming = false
	}
	u.size, u.mtime = fi.Size(), fi.ModTime()
	a.r.res.Size = u.size
	return nil
}

func (u *upload) attempt(ctx context.Context, sess protocol.Session, a *attempt) error {
	r := a.r
	if err := u.checkSource(a); err != nil {
		return err
	}
	if u.renaming {
		// A previous attempt may have renamed the file before failing.
		if done, err := u.renamed(ctx, sess, a); done || err != nil {
			return err
		}
	}
	remote, err := remoteSize(ctx, sess, u.target)
	if err != nil {
		return err
	}
	a.dog.touch()
	offset := remote
	if u.safe >= 0 && u.safe < offset {
		offset = u.safe
	}
	switch {
	case remote > u.size:
		r.restart(a, fmt.Sprintf("remote file is larger (%d) than the source (%d)", remote, u.size))
		offset = 0
	case u.noResume && offset > 0 && offset < u.size:
		r.restart(a, "server cannot resume uploads")
		offset = 0
	}
	if k := min(r.cfg.overlap(), offset); k > 0 {
		same, err := a.sameRange(ctx, sess, u.target, u.src, offset-k, offset)
		if err != nil {
			return err
		}
		if !same {
			r.restart(a, fmt.Sprintf("the remote partial's last %d bytes differ from the source", k))
			offset = 0
		}
		a.dog.touch()
	}
	if offset == u.size && remote == u.size {
		a.start(offset)
		return u.finish(ctx, sess, a)
	}
	if err := u.preflight(ctx, sess, offset); err != nil {
		return err
	}
	if offset > 0 && a.n > 1 {
		r.res.Resumes++
	}
	w, err := sess.OpenWriter(ctx, u.target, offset)
	if errors.Is(err, protocol.ErrResumeUnsupported) && offset > 0 {
		u.noResume = true
		r.restart(a, "server refused to resume at an offset")
		offset = 0
		w, err = sess.OpenWriter(ctx, u.target, 0)
	}
	if err != nil {
		return err
	}
	u.safe = offset
	m := a.start(offset)
	var localErr error
	src := &countingReader{r: &localReader{r: io.NewSectionReader(u.src, offset, u.size-offset), err: &localErr}, m: m}
	n, copyErr := io.Copy(w, src)
	closeErr := w.Close()
	a.acked = w.Acked()
	u.safe = offset + a.acked
	if localErr != nil {
		return localErr
	}
	if err := serverVerdict(copyErr, closeErr); err != nil {
		return err
	}
	if offset+n != u.size {
		// The source shrank while being read: the next attempt restarts.
		return &protocol.Error{Op: "read", Path: u.final, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: read %d bytes, expected %d", ErrSourceChanged, offset+n, u.size)}
	}
	return u.finish(ctx, sess, a)
}

// preflight refuses an upload that cannot fit, where the server reports
// its free space (SFTP statvfs@openssh.com), before a byte is sent.
func (u *upload) preflight(ctx context.Context, sess protocol.Session, offset int64) error {
	sr, ok := sess.(protocol.SpaceReporter)
	if !ok {
		return nil
	}
	free, err := sr.FreeSpace(ctx, path.Dir(u.target))
	if err != nil {
		return nil // not offered, or not for this path: nothing to tell
	}
	if need := u.size - offset; free < need {
		return &protocol.Error{Op: "preflight", Path: u.target, Kind: protocol.ErrNoSpace,
			Err: fmt.Errorf("%d bytes to send, %d free on the server", need, free)}
	}
	return nil
}

// serverVerdict picks the error to report when writing or closing failed:
// the server's reply to the transfer (an error with a protocol status code,
// such as FTP's 451 after a reset data connection) says why, the write
// error only how it showed.
func serverVerdict(copyErr, closeErr error) error {
	var pe *protocol.Error
	if closeErr != nil && errors.As(closeErr, &pe) && pe.Code != 0 {
		return closeErr
	}
	if copyErr != nil {
		return copyErr
	}
	return closeErr
}

// finish verifies the uploaded file and renames it into place.
func (u *upload) finish(ctx context.Context, sess protocol.Session, a *attempt) error {
	got, err := remoteSize(ctx, sess, u.target)
	if err != nil {
		return err
	}
	if got != u.size {
		// Transient: the next attempt resumes from what is there.
		u.safe = min(u.safe, got)
		return &protocol.Error{Op: "verify", Path: u.target, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: remote size %d, want %d", ErrVerify, got, u.size)}
	}
	u.safe = u.size
	// A source that changed during the copy must not be reported as sent.
	if fi, err := u.src.Stat(); err == nil && (fi.Size() != u.size || !fi.ModTime().Equal(u.mtime)) {
		return &protocol.Error{Op: "verify", Path: u.final, Kind: protocol.ErrTransient, Err: ErrSourceChanged}
	}
	method, err := a.verifyContent(ctx, sess, u.target, u.src, u.size)
	if err != nil {
		return err
	}
	if u.target != u.final {
		u.renaming = true
		if err := sess.Rename(ctx, u.target, u.final); err != nil {
			return err
		}
	}
	a.r.res.Verified = method
	a.r.emit(Event{Kind: EventVerified, Attempt: a.n, Method: method})
	return nil
}

// renamed handles an attempt after one that failed while renaming: if the
// temporary file is gone and the final file has the source's size, the
// rename happened.
func (u *upload) renamed(ctx context.Context, sess protocol.Session, a *attempt) (bool, error) {
	if _, err := sess.Stat(ctx, u.target); !isNotExist(err) {
		return false, err
	}
	got, err := remoteSize(ctx, sess, u.final)
	if err != nil || got != u.size {
		return false, err
	}
	a.start(u.size)
	a.r.res.Verified = "size"
	a.r.emit(Event{Kind: EventVerified, Attempt: a.n, Method: "size"})
	return true, nil
}

// remoteSize returns the remote file's size, 0 when it does not exist.
func remoteSize(ctx context.Context, sess protocol.Session, path string) (int64, error) {
	info, err := sess.Stat(ctx, path)
	if isNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if info.IsDir {
		return 0, &protocol.Error{Op: "stat", Path: path, Kind: protocol.ErrInvalidPath, Err: errors.New("is a directory")}
	}
	return info.Size, nil
}

func (r *runner) restart(a *attempt, reason string) {
	r.res.Restarts++
	r.emit(Event{Kind: EventRestart, Attempt: a.n, Reason: reason})
	r.log.Warn("restarting from zero", "op", r.op, "path", r.path, "reason", reason)
}
