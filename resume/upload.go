package resume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
// remote file's size, lowered to the contiguous acknowledged mark (writes
// in flight when a connection broke may have left holes, as concurrent
// SFTP writes do), and never past the end of the remote. Only bytes the
// engine can prove are resumed: within one call, what earlier attempts got
// acknowledged; across calls (another process, after a crash), what
// Config.StatePath records for a source of the same size and modification
// time, or a prefix a server-side hash proves. Any other remote partial is
// rewritten from zero. Before appending, the last Config.Overlap bytes of
// the remote partial (more when they are all one value) are compared with
// the source; on a mismatch, or when the remote is larger than the source,
// the upload restarts from zero. A server that refuses to resume restarts
// from zero once. With Config.TempPath set, the data goes there and is
// renamed to remotePath only after verification.
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
	cfg = cfg.withLimiter() // every segment and attempt shares one limiter
	var pending protocol.Session
	if cfg.StatePath != "" && cfg.TempPath != "" && cfg.Segments != 1 {
		res, done, first, err := maybeSegmentedUpload(ctx, dial, src, remotePath, cfg)
		if done {
			return res, settleState(cfg.StatePath, err)
		}
		pending = first
	}
	u := &upload{src: src, final: remotePath, target: remotePath, safe: -1, size: -1, saved: -1, statePath: cfg.StatePath}
	if cfg.TempPath != "" {
		u.target = cfg.TempPath
	}
	if u.statePath != "" {
		_, err := os.Lstat(u.statePath)
		u.lazy = errors.Is(err, fs.ErrNotExist)
	}
	r := newRunner("upload", remotePath, dial, cfg)
	r.pending = pending
	r.res.StartOffset = -1
	// What the remote confirmed at the start of an attempt, or what its
	// acknowledgements proved since (an FTP writer's, only while the
	// server writes in order).
	r.committed = func() int64 { return max(r.best, u.safe, 0) }
	res, err := r.run(ctx, u.attempt)
	if u.lazy {
		// No state file was there, and none was written: nothing to
		// remove (nor a directory to scan for leftovers).
		return res, err
	}
	return res, settleState(cfg.StatePath, err)
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
	// unknown (before the first attempt).
	safe int64
	// statePath is where safe is recorded for another process, with the
	// source's fingerprint; saved is the value last recorded (-1: none).
	statePath string
	saved     int64
	// lazy is set while no state file exists, none having been there at
	// the start: the records made before the copy wait for its first
	// checkpoint (checkpointInterval) rather than create a file for
	// every upload. Creating files is what costs (a new inode: on ext4,
	// the slower the more files were deleted lately); an upload that
	// ends sooner never needs one, and one killed sooner loses at most
	// that interval of work, which a rerun sends again: a record is
	// still written before anything that proves less than it could.
	lazy bool
	// streaming is set while a writer whose server writes in order runs
	// (protocol.SequentialWriter); savedStreaming is its recorded value.
	streaming, savedStreaming bool
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
		u.safe, u.saved = 0, -1
		u.renaming = false
	}
	u.size, u.mtime = fi.Size(), fi.ModTime()
	a.r.res.Size = u.size
	return nil
}

// record writes u.safe, with the source's fingerprint, to the state file,
// when it changed since the last write.
func (u *upload) record() error { return u.write(false) }

// recordLater is record, left to the next checkpoint while u.lazy.
func (u *upload) recordLater() error {
	if u.lazy {
		return nil
	}
	return u.record()
}

// write records u.safe. A record that proves less than the last one (a
// restart, a new source) is synced before it returns, since the bytes
// written under it must never be judged by the older one; one that proves
// more is synced only when sync is set: losing it (a power cut) costs
// progress, never correctness. Syncing costs: on ext4 it commits the
// journal, which writes out a local server's freshly received data too.
func (u *upload) write(sync bool) error {
	if u.statePath == "" || (u.saved == u.safe && u.savedStreaming == u.streaming) {
		return nil
	}
	// A first record needs no sync: should it be lost, no record is
	// left (a matching earlier one would have been loaded into saved),
	// and a partial without one proves nothing.
	sync = sync || u.safe < u.saved
	if err := single(u.target, u.size, u.mtime, u.safe, u.safe, u.streaming).write(u.statePath, sync); err != nil {
		return &localError{op: "write state", err: err}
	}
	u.saved, u.savedStreaming = u.safe, u.streaming
	u.lazy = false
	return nil
}

// smallUpload is the size below which a source with no state record is
// sent whole without asking for the size of a partial first: at most
// this much is sent again, where the question costs every file a round
// trip.
const smallUpload = 1 << 20

// sendWhole reports whether the first attempt starts at zero without
// looking at the remote: a small source that no state record covers. A
// partial left by an earlier process would be proven only by a server's
// hash, to save sending at most smallUpload bytes.
func (u *upload) sendWhole() bool {
	return u.size < smallUpload && (u.statePath == "" || u.lazy)
}

// provenAtStart returns how much of a remote partial left by an earlier
// process can be resumed: what the state file records for this source, or
// all of it when a server-side hash proves it; else 0.
func (u *upload) provenAtStart(ctx context.Context, sess protocol.Session, a *attempt, remote int64) (int64, error) {
	if remote == 0 || remote > u.size {
		return 0, nil // nothing to prove, or a restart the caller reports
	}
	if st, err := loadSidecar(u.statePath); err == nil && st.matches(u.target, u.size, u.mtime, 1) {
		g := st.Segments[0]
		u.saved, u.savedStreaming = g.Done, g.Streaming
		if g.Streaming && remote >= g.Done {
			// A server that writes in order holds a prefix of what the
			// stream sent: all of it is the source's.
			return remote, nil
		}
		return g.Done, nil
	}
	if ok, err := a.hashProves(ctx, sess, u.target, u.src, remote); err != nil || ok {
		return remote, err
	}
	a.r.restart(a, "nothing proves the remote partial was written from this source (no matching state file)")
	return 0, nil
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
	var remote int64
	var exists bool
	var err error
	if u.safe < 0 && u.sendWhole() {
		// Nothing to look for: start at zero (the open truncates).
		u.safe = 0
	} else if remote, exists, err = remoteFile(ctx, sess, u.target); err != nil {
		return err
	}
	a.dog.touch()
	if u.safe < 0 {
		if u.safe, err = u.provenAtStart(ctx, sess, a, remote); err != nil {
			u.safe = -1
			return err
		}
	}
	offset := min(remote, u.safe)
	switch {
	case remote > u.size:
		r.restart(a, fmt.Sprintf("remote file is larger (%d) than the source (%d)", remote, u.size))
		offset = 0
	case u.noResume && offset > 0 && offset < u.size:
		r.restart(a, "server cannot resume uploads")
		offset = 0
	}
	k, _, err := proofWindow(u.src, offset, r.cfg.overlap())
	if err != nil {
		return err
	}
	// A window of one byte value proves less; the final size check still
	// catches a server that wrote at another offset than asked.
	if k > 0 {
		same, err := a.sameRange(ctx, sess, u.target, u.src, offset-k, offset)
		switch {
		case errors.Is(err, protocol.ErrResumeUnsupported):
			// The partial cannot be read from an offset, so nothing
			// proves it; and a server that cannot read from an offset
			// seldom writes at one.
			u.noResume = true
			r.restart(a, "the server cannot resume (it refused an offset): restarting from zero")
			offset = 0
		case err != nil:
			return err
		case !same:
			r.restart(a, fmt.Sprintf("the remote partial's last %d bytes differ from the source", k))
			offset = 0
		}
		a.dog.touch()
	}
	u.safe = offset
	if err := u.recordLater(); err != nil {
		return err
	}
	if offset == u.size && remote == u.size && exists {
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
		offset, u.safe = 0, 0
		if err := u.recordLater(); err != nil {
			return err
		}
		w, err = sess.OpenWriter(ctx, u.target, 0)
	}
	if err != nil {
		return err
	}
	// A writer whose server writes in order leaves a prefix of what it
	// was sent, should this process die: recorded before the first byte.
	_, u.streaming = w.(protocol.SequentialWriter)
	if err := u.recordLater(); err != nil {
		w.Close()
		return err
	}
	m := a.start(offset)
	var cp *checkpoints
	switch {
	case u.statePath != "" && !u.streaming:
		// Only acknowledged bytes are recorded: what was in flight when
		// this process dies is unproven.
		cp = startCheckpoints(func(bool) {
			u.safe = offset + w.Acked()
			_ = u.write(false)
		})
	case u.statePath != "" && u.lazy:
		// A server that writes in order needs one record, made above or
		// here: it lets a rerun take the remote size, whatever it has
		// grown to.
		cp = startCheckpoints(func(bool) { _ = u.write(false) })
	}
	var localErr error
	n, copyErr := u.copy(w, offset, m, &localErr)
	closeErr := w.Close()
	if cp != nil {
		cp.Stop()
	}
	a.acked = w.Acked()
	u.safe = offset + a.acked
	verdict := serverVerdict(copyErr, closeErr)
	if localErr != nil || verdict != nil || offset+n != u.size {
		// What this attempt got acknowledged survives this process. A
		// complete one is not recorded: the record it started with
		// already lets a rerun verify it, and on a shared disk a rename
		// may wait for the journal to write out the server's data.
		u.streaming = false
		_ = u.record()
	}
	if localErr != nil {
		return localErr
	}
	if verdict != nil {
		return verdict
	}
	if offset+n != u.size {
		// The source shrank while being read: the next attempt restarts.
		return &protocol.Error{Op: "read", Path: u.final, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: read %d bytes, expected %d", ErrSourceChanged, offset+n, u.size)}
	}
	return u.finish(ctx, sess, a)
}

// copy sends the source from offset to w, counting what goes through m.
// A local file going to a server that writes in order (FTP) is handed to
// w in chunks (32 KiB to 1 MiB: what the link sends in a fraction of a
// second), each an *io.LimitedReader over the *os.File, so that a plain
// TCP data connection sends it by sendfile(2): no copy through this
// process, about half its system time (on loopback the receiving server
// spends some of it back: it copies from page-sized fragments). Anything
// else, or a paced transfer, is copied through a buffer.
func (u *upload) copy(w protocol.Writer, offset int64, m *meter, localErr *error) (int64, error) {
	f, isFile := u.src.(*os.File)
	rf, canReadFrom := w.(io.ReaderFrom)
	if _, seq := w.(protocol.SequentialWriter); !isFile || !canReadFrom || !seq || m.limit != nil {
		src := &countingReader{r: &localReader{r: io.NewSectionReader(u.src, offset, u.size-offset), err: localErr}, m: m}
		return io.Copy(w, src)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		*localErr = &localError{op: "read", err: err}
		return 0, *localErr
	}
	var n int64
	chunk := int64(minKernelChunk)
	for n < u.size-offset {
		lr := &io.LimitedReader{R: f, N: min(chunk, u.size-offset-n)}
		want := lr.N
		start := time.Now()
		k, err := rf.ReadFrom(lr)
		n += k
		m.add(int(k))
		if err != nil {
			// Tell a failing local file from a failing connection:
			// the file still reads at that offset, or it does not.
			var b [1]byte
			if _, rerr := f.ReadAt(b[:], offset+n); rerr != nil && rerr != io.EOF {
				*localErr = &localError{op: "read", err: rerr}
				return n, *localErr
			}
			return n, err
		}
		if k < want {
			break // the file shrank: the caller sees the short count
		}
		// A chunk is counted only once sent: keep each to a fraction of
		// a second, so that progress and the stall watchdog see a slow
		// link move as often as a copy through a buffer would.
		switch took := time.Since(start); {
		case took < 50*time.Millisecond:
			chunk = min(2*chunk, maxKernelChunk)
		case took > 500*time.Millisecond:
			chunk = max(chunk/2, minKernelChunk)
		}
	}
	return n, nil
}

// What one ReadFrom call of a kernel copy sends, at least and at most:
// progress and the stall watchdog see the transfer at this granularity.
// The smallest is io.Copy's buffer.
const (
	minKernelChunk = 32 << 10
	maxKernelChunk = 1 << 20
)

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
		// A server may answer a rename before doing it (rclone postpones
		// it while a stale handle is open): ok needs the file in place.
		got, exists, mtime, err := remoteFileTime(ctx, sess, u.final)
		if err != nil {
			return err
		}
		a.r.res.RemoteModTime = mtime
		if !exists || got != u.size {
			return &protocol.Error{Op: "rename", Path: u.final, Kind: protocol.ErrTransient,
				Err: fmt.Errorf("%w: the server accepted the rename but %s", ErrVerify, describeFinal(exists, got, u.size))}
		}
	}
	a.r.res.Verified = method
	a.r.emit(Event{Kind: EventVerified, Attempt: a.n, Method: method})
	return nil
}

// describeFinal says what is wrong with the final file after a rename.
func describeFinal(exists bool, got, want int64) string {
	if !exists {
		return "the file is not there"
	}
	return fmt.Sprintf("the file has %d bytes, want %d", got, want)
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
	size, _, err := remoteFile(ctx, sess, path)
	return size, err
}

// remoteFile returns the remote file's size and whether it exists: by the
// session's Size where it has one (on FTP one command, where a Stat sends
// SIZE and then MDTM, or a probe for a directory when the file is
// missing; a directory that reads as missing fails the upload's STOR),
// else, or where Size is unsupported (a server that refuses SIZE), by
// Stat, which has slower ways.
func remoteFile(ctx context.Context, sess protocol.Session, path string) (size int64, exists bool, err error) {
	sz, ok := sess.(protocol.Sizer)
	var n int64
	if ok {
		n, err = sz.Size(ctx, path)
	}
	if !ok || errors.Is(err, protocol.ErrUnsupported) {
		size, exists, _, err = remoteFileTime(ctx, sess, path)
		return size, exists, err
	}
	switch {
	case isNotExist(err):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case n < 0:
		return 0, false, negativeSize(path, n)
	}
	return n, true, nil
}

func negativeSize(path string, n int64) error {
	return &protocol.Error{Op: "stat", Path: path, Kind: protocol.ErrProtocol, Err: fmt.Errorf("the server reported a negative size (%d)", n)}
}

// remoteFileTime is remoteFile that also returns the modification time
// the server reported (zero when none).
func remoteFileTime(ctx context.Context, sess protocol.Session, path string) (size int64, exists bool, mtime time.Time, err error) {
	info, err := sess.Stat(ctx, path)
	if isNotExist(err) {
		return 0, false, time.Time{}, nil
	}
	if err != nil {
		return 0, false, time.Time{}, err
	}
	if info.IsDir {
		return 0, false, time.Time{}, &protocol.Error{Op: "stat", Path: path, Kind: protocol.ErrInvalidPath, Err: errors.New("is a directory")}
	}
	if info.Size < 0 {
		return 0, false, time.Time{}, negativeSize(path, info.Size)
	}
	return info.Size, true, info.ModTime, nil
}

func (r *runner) restart(a *attempt, reason string) {
	r.res.Restarts++
	r.emit(Event{Kind: EventRestart, Attempt: a.n, Reason: reason})
	r.log.Warn("restarting from zero", "op", r.op, "path", r.path, "reason", reason)
}
