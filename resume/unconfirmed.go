package resume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/openhaul/haul/protocol"
)

// Segmented uploads over range writers whose promises hold only on some
// servers (protocol.UnconfirmedRangeWriter, FTP's REST + STOR).
//
// Such an upload starts with a probe on two sessions:
//
//  1. the first probeChunk bytes of the file go out with an ordinary
//     sequential writer at offset 0, which creates (or truncates) the
//     temporary file; no range writer is ever opened at offset 0;
//  2. the first session opens a range writer at the start of the last
//     range, past the end of the file;
//  3. while it is open, the second session opens one where range 0 goes
//     on: a server that lets one writer at a time hold the file (vsftpd's
//     lock_upload_files) keeps it waiting, and the probe gives up after
//     probeWait;
//  4. both write probeChunk bytes and close; the file must then end
//     exactly where the last range's bytes end. A server that wrote them
//     at the end of the file instead (pure-ftpd) or refused the offset
//     (proftpd) fails here.
//
// Any failure of the probe falls back to a single stream, after removing
// the temporary file. After a failed range attempt, what landed is learned
// by reading the range back (landed): every byte of the temporary file is
// either the source's byte at that offset or never written (a hole, zero),
// because the probe's first write truncated it and every later write puts
// the source's bytes at their own offsets. A byte equal to the source's is
// therefore right whoever wrote it, and a matching non-zero byte proves the
// server got that far, since a server writes one connection's bytes in
// order.

const (
	// probeChunk is how much of a range each probe write moves.
	probeChunk = 64 << 10
	// probeWaitBase is how long, plus probeWaitRTTs round trips, the probe
	// waits for a second writer to be accepted while one is open.
	probeWaitBase = 2 * time.Second
	probeWaitRTTs = 8
	// landedWindow is the first span read back after a failed range
	// attempt; it doubles until it holds proof.
	landedWindow = 1 << 20
	// confirmWindow is the first span read back after a range writer's
	// transfer was confirmed: FTP's 226 only says the data connection
	// ended, which a middlebox's FIN also does.
	confirmWindow = 64 << 10
)

// errNoConcurrentWriters reports a server that let a second writer wait
// while another held the file.
var errNoConcurrentWriters = errors.New("the server lets one connection at a time write a file")

// errProbeSize reports a range write past the end that did not land at its
// offset.
var errProbeSize = errors.New("range writes did not land where they were sent")

// probeFailed marks an error of the probe; it has no Unwrap, so the runner
// does not retry it and the upload falls back to a single stream.
type probeFailed struct{ err error }

func (e *probeFailed) Error() string { return "segmented upload probe: " + e.err.Error() }

// probeRanges runs the probe on first (a logged-in session) and one more
// session, taken from pre (sessions logging in meanwhile) or dialed. On
// success it records what the probe wrote in st and returns the sessions,
// pre's included, by the range each carries on; on failure the temporary
// file is removed and every session is closed.
func probeRanges(ctx context.Context, dial protocol.Dialer, first protocol.Session, pre *predial, src Source, st *sidecar, rtt time.Duration, cfg Config) (map[int]protocol.Session, error) {
	var second protocol.Session
	segs := st.Segments
	last := len(segs) - 1
	seed := min(probeChunk, segs[0].End)
	c0 := min(probeChunk, segs[0].End-seed)
	cLast := min(probeChunk, segs[last].End-segs[last].Start)
	r := newRunner("upload", st.Path, dial, cfg)
	r.pending = first
	_, err := r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		var wLast protocol.Writer
		fail := func(err error) error {
			if ctx.Err() != nil {
				return err
			}
			// Best effort: the file holds only the probe's bytes.
			if wLast != nil {
				_ = wLast.Close()
			}
			_ = sess.Remove(ctx, st.Path)
			return &probeFailed{err: err}
		}
		rw, ok := sess.(protocol.RangeWriter)
		if !ok {
			return fail(errors.New("the session cannot write ranges"))
		}
		a.start(0)
		w, err := sess.OpenWriter(ctx, st.Path, 0)
		if err != nil {
			return fail(err)
		}
		if err := fillSpan(w, src, 0, seed); err != nil {
			return fail(err)
		}
		a.dog.touch()
		if wLast, err = rw.OpenRangeWriter(ctx, st.Path, segs[last].Start); err != nil {
			wLast = nil
			return fail(err)
		}
		a.dog.touch()
		if second == nil {
			if pre.pending > 0 {
				second, err = pre.take(ctx)
			} else {
				second, err = dial(ctx)
			}
			if err != nil {
				second = nil
				return fail(err)
			}
		}
		rw2, ok := second.(protocol.RangeWriter)
		if !ok {
			return fail(errors.New("the session cannot write ranges"))
		}
		// The second writer's context lives as long as the writer; it is
		// cancelled early only if the server keeps it waiting.
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// Well inside the stall timeout, which would take the wait for a
		// failed attempt and retry it.
		wait := min(probeWaitBase+probeWaitRTTs*rtt, cfg.stallTimeout()/2)
		timer := time.AfterFunc(wait, cancel)
		w0, err := rw2.OpenRangeWriter(wctx, st.Path, seed)
		if !timer.Stop() {
			if err == nil {
				w0.Close()
			}
			return fail(fmt.Errorf("%w (no answer within %v)", errNoConcurrentWriters, wait.Round(time.Millisecond)))
		}
		if err != nil {
			return fail(err)
		}
		a.dog.touch()
		if err := fillSpan(w0, src, seed, c0); err != nil {
			return fail(err)
		}
		if err := fillSpan(wLast, src, segs[last].Start, cLast); err != nil {
			return fail(err)
		}
		a.dog.touch()
		want := segs[last].Start + cLast
		if err := probeSize(ctx, sess, st.Path, want); err != nil {
			return fail(err)
		}
		// A write that starts below the end must leave the end alone
		// (no server may cut the file at the REST offset).
		w, err = rw.OpenRangeWriter(ctx, st.Path, seed+c0)
		if err != nil {
			return fail(err)
		}
		if err := fillSpan(w, src, seed+c0, 0); err != nil {
			return fail(err)
		}
		if err := probeSize(ctx, sess, st.Path, want); err != nil {
			return fail(err)
		}
		// The start must hold what was sent: a 226 alone does not prove it.
		same, err := a.sameRange(ctx, sess, st.Path, src, 0, seed+c0)
		if err != nil {
			return fail(err)
		}
		if !same {
			return fail(fmt.Errorf("%w: the first %d bytes differ from the source", errProbeSize, seed+c0))
		}
		a.keep = true
		return nil
	})
	if err != nil {
		pre.cancel()
	}
	others := pre.rest()
	if err != nil {
		for _, sess := range append(others, second) {
			if sess != nil {
				sess.Close()
			}
		}
		r.dropPending()
		return nil, err
	}
	segs[0].Done = seed + c0
	segs[last].Done = cLast
	ready := map[int]protocol.Session{0: second, last: r.kept}
	for i, sess := range others {
		if 1+i < last {
			ready[1+i] = sess // a range without one (a failed login) dials itself
		} else {
			sess.Close()
		}
	}
	return ready, nil
}

// probeSize fails unless path is want bytes long.
func probeSize(ctx context.Context, sess protocol.Session, path string, want int64) error {
	info, err := sess.Stat(ctx, path)
	if err != nil {
		return err
	}
	if info.Size != want {
		return fmt.Errorf("%w: the file is %d bytes, want %d", errProbeSize, info.Size, want)
	}
	return nil
}

// fillSpan sends src's bytes [off, off+n) to w and closes it; nil means
// the server confirmed them.
func fillSpan(w protocol.Writer, src io.ReaderAt, off, n int64) error {
	var localErr error
	_, copyErr := io.Copy(w, &localReader{r: io.NewSectionReader(src, off, n), err: &localErr})
	closeErr := w.Close()
	if localErr != nil {
		return localErr
	}
	return serverVerdict(copyErr, closeErr)
}

// landed reads back the sent bytes after off in path and returns how many
// of them, counted from off, are known to hold the source's bytes (see the
// comment at the top of this file). It reads the last window bytes first
// and widens towards off until a matching non-zero byte proves how far the
// server wrote.
func landed(ctx context.Context, sess protocol.Session, path string, src io.ReaderAt, off, sent, window int64, a *attempt) (int64, error) {
	info, err := sess.Stat(ctx, path)
	if err != nil {
		return 0, err
	}
	// Nothing past the remote's end landed.
	sent = max(0, min(sent, info.Size-off))
	w := min(sent, window)
	for sent > 0 {
		lo := off + sent - w
		proof, firstBad, err := scanLanded(ctx, sess, path, src, lo, off+sent, a)
		if err != nil {
			return 0, err
		}
		if proof >= 0 || lo == off {
			if firstBad < 0 {
				return sent, nil
			}
			return firstBad - off, nil
		}
		w = min(sent, 2*w)
	}
	return 0, nil
}

// scanLanded compares the remote's bytes [lo, hi) with src's (see
// compareStream).
func scanLanded(ctx context.Context, sess protocol.Session, path string, src io.ReaderAt, lo, hi int64, a *attempt) (proof, firstBad int64, err error) {
	rd, err := sess.OpenReader(ctx, path, lo)
	if err != nil {
		return 0, 0, err
	}
	// Closing before the end aborts the transfer; what the server says
	// about that abort does not change what was read.
	defer rd.Close()
	return compareStream(rd, src, lo, hi, a, false)
}
