package resume

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/openhaul/haul/protocol"
)

// Upload sends the size bytes of src to remotePath, resuming after
// failures until the remote file holds exactly those bytes.
//
// On every attempt the remote is authoritative: the attempt resumes at the
// remote file's size, lowered to the contiguous acknowledged mark of the
// previous attempt when that is smaller (concurrent SFTP writes may leave
// holes), and never past the end of the remote. A remote file larger than
// the source is not a partial of it: the upload starts again from zero.
// A server that refuses to resume restarts from zero once.
//
// Success is reported only after the remote size equals size. The error,
// if any, is an *Error.
func Upload(ctx context.Context, dial protocol.Dialer, src io.ReaderAt, size int64, remotePath string, cfg Config) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{}, &Error{Op: "upload", Path: remotePath, Err: err}
	}
	u := &upload{src: src, size: size, path: remotePath, safe: -1}
	r := newRunner("upload", remotePath, dial, cfg)
	r.res.Size = size
	r.res.StartOffset = -1
	r.committed = func() int64 { return max(u.safe, 0) }
	return r.run(ctx, u.attempt)
}

type upload struct {
	src  io.ReaderAt
	size int64
	path string
	// safe is the offset up to which the remote is known to hold the
	// source's bytes, from the last attempt's acknowledgements; -1 before
	// the first attempt wrote anything.
	safe int64
	// noResume is set once the server refused to write at an offset.
	noResume bool
}

func (u *upload) attempt(ctx context.Context, sess protocol.Session, a *attempt) error {
	r := a.r
	remote, err := remoteSize(ctx, sess, u.path)
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
	if r.res.StartOffset < 0 {
		r.res.StartOffset = offset
	}
	if offset == u.size && remote == u.size {
		a.start(offset)
		return u.verify(ctx, sess, a)
	}
	if offset > 0 && a.n > 1 {
		r.res.Resumes++
	}
	w, err := sess.OpenWriter(ctx, u.path, offset)
	if errors.Is(err, protocol.ErrResumeUnsupported) && offset > 0 {
		u.noResume = true
		r.restart(a, "server refused to resume at an offset")
		offset = 0
		w, err = sess.OpenWriter(ctx, u.path, 0)
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
	if err := errors.Join(copyErr, closeErr); err != nil {
		return err
	}
	if offset+n != u.size {
		return &localError{op: "read", err: fmt.Errorf("%w: read %d bytes, expected %d", ErrSourceChanged, offset+n, u.size)}
	}
	return u.verify(ctx, sess, a)
}

// verify confirms the remote size equals the source size.
func (u *upload) verify(ctx context.Context, sess protocol.Session, a *attempt) error {
	got, err := remoteSize(ctx, sess, u.path)
	if err != nil {
		return err
	}
	if got != u.size {
		// Transient: the next attempt resumes from what is there.
		u.safe = min(u.safe, got)
		return &protocol.Error{Op: "verify", Path: u.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: remote size %d, want %d", ErrVerify, got, u.size)}
	}
	u.safe = u.size
	a.r.res.Verified = "size"
	a.r.emit(Event{Kind: EventVerified, Attempt: a.n, Method: "size"})
	return nil
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
