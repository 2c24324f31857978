package resume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openhaul/haul/protocol"
)

// Defaults for segmented (multi-connection) transfers.
const (
	// DefaultMinSegmentSize is the smallest byte range worth its own
	// connection.
	DefaultMinSegmentSize = 32 << 20
	// autoSegments is how many connections Segments == 0 uses on a long
	// link.
	autoSegments = 4
	// autoSegmentRTT is the round trip from which Segments == 0 splits a
	// large file: below it one stream already fills the link.
	autoSegmentRTT = 10 * time.Millisecond
	// MaxSegments caps Config.Segments. Servers limit connections per
	// client well below what would matter more (OpenSSH starts refusing
	// unauthenticated connections past MaxStartups 10, vsftpd and
	// pure-ftpd are often set to a few per address), and past 16 streams
	// a link gains nothing that one more stream's window would not give.
	MaxSegments = 16
)

// split divides [0, size) into n ranges.
func split(size int64, n int) []segState {
	segs := make([]segState, n)
	per := size / int64(n)
	for i := range segs {
		segs[i].Start = int64(i) * per
		segs[i].End = segs[i].Start + per
	}
	segs[n-1].End = size
	return segs
}

// chooseSegments decides how many connections a download of size bytes
// uses, given the configured count and the measured round trip.
func chooseSegments(cfg Config, size int64, rtt time.Duration) int {
	minSeg := cfg.MinSegmentSize
	if minSeg <= 0 {
		minSeg = DefaultMinSegmentSize
	}
	n := min(cfg.Segments, MaxSegments)
	if n == 0 {
		if rtt < autoSegmentRTT {
			return 1
		}
		n = autoSegments
	}
	return int(max(1, min(int64(n), size/minSeg)))
}

// rttSamples is how many round trips roundTrip takes at most.
const rttSamples = 3

// roundTrip returns the round trip to use for deciding on segments, given
// a first sample: one that already says the link is fast stands; else the
// smallest of a few more, since one request may have queued behind the
// server's disk or a busy machine (a cheap check where the session has
// one, else another stat).
func roundTrip(ctx context.Context, sess protocol.Session, path string, first time.Duration) time.Duration {
	best := first
	for i := 1; i < rttSamples && best >= autoSegmentRTT; i++ {
		began := time.Now()
		var err error
		if c, ok := sess.(protocol.Checker); ok {
			err = c.Check(ctx)
		} else {
			_, err = sess.Stat(ctx, path)
		}
		if err != nil {
			break
		}
		best = min(best, time.Since(began))
	}
	return best
}

// probe dials once to learn the remote file's size and the round trip. On
// success it returns the logged-in session for the transfer to go on with.
func probe(ctx context.Context, dial protocol.Dialer, path string, cfg Config) (protocol.FileInfo, time.Duration, protocol.Session, Result, error) {
	var info protocol.FileInfo
	var rtt time.Duration
	r := newRunner("download", path, dial, cfg)
	res, err := r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		began := time.Now()
		var err error
		info, err = sess.Stat(ctx, path)
		rtt = time.Since(began)
		if err == nil {
			rtt = roundTrip(ctx, sess, path, rtt)
		}
		a.keep = true
		return err
	})
	return info, rtt, r.kept, res, err
}

// segmenter runs the ranges of a segmented transfer, each over its own
// session with its own attempts, and keeps their state file current.
type segmenter struct {
	op, path  string
	dial      protocol.Dialer
	cfg       Config // with callbacks serialized
	statePath string
	state     *sidecar
	// durable makes written data durable before a state save (a
	// download's fsync), or is nil.
	durable func() error
	// attempt moves what is left of range i on sess.
	attempt func(ctx context.Context, sess protocol.Session, a *attempt, i int, g segState) error

	// ready holds logged-in sessions for the first attempt of some ranges
	// (by index); spare is one left by a finished range, for the
	// verification.
	ready map[int]protocol.Session
	spare protocol.Session

	mu sync.Mutex // guards state, live and abandoned, serializes callbacks
	// saveMu serializes writes of the state file.
	saveMu sync.Mutex
	// synced holds, for a download, each range's Done as last made
	// durable (guarded by mu).
	synced []int64
	// acking holds, per range whose writer runs, how a checkpoint learns
	// what the writer moved (guarded by mu).
	acking map[int]liveWriter
	// abandoned is set when the state can lead nowhere: it is deleted
	// instead of saved, so the next run starts over.
	abandoned bool
	live      []int64 // per range: bytes sent by the running attempt, not yet acknowledged
	// windows holds, per range that started from nothing in this run, the
	// bytes its stream brought from before its start (checkWindows).
	windows  map[int][]byte
	sum      atomic.Int64
	progress func(done, total int64)
}

func newSegmenter(op, path string, dial protocol.Dialer, cfg Config, st *sidecar) *segmenter {
	s := &segmenter{op: op, path: path, dial: dial, cfg: cfg, statePath: cfg.StatePath, state: st,
		live: make([]int64, len(st.Segments)), ready: make(map[int]protocol.Session)}
	for _, g := range st.Segments {
		s.sum.Add(g.Done)
	}
	// Callbacks come from several goroutines: serialize them.
	if cfg.OnEvent != nil {
		on := cfg.OnEvent
		s.cfg.OnEvent = func(e Event) { s.mu.Lock(); defer s.mu.Unlock(); on(e) }
	}
	s.progress = cfg.Progress
	s.cfg.Progress = nil
	return s
}

// run moves every unfinished range at once and returns the summed result,
// or the first range's final error as an *Error.
func (s *segmenter) run(ctx context.Context) (Result, error) {
	began := time.Now()
	start := s.sum.Load()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]Result, len(s.state.Segments))
	// failed is the first range error in time: the one that stopped the
	// others, whose own errors only say they were stopped.
	var failed error
	var wg sync.WaitGroup
	for i, g := range s.state.Segments {
		if g.Done >= g.End-g.Start {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			results[i], err = s.runSegment(ctx, i)
			if err != nil {
				s.mu.Lock()
				if failed == nil {
					failed = err
				}
				s.mu.Unlock()
				cancel() // one range failed for good: stop the others
			}
		}()
	}
	// Every checkpointInterval the ranges' progress is recorded, so that a run that
	// dies (kill -9) leaves little to redo.
	cp := startCheckpoints(func(full bool) { _ = s.checkpoint(full, full && s.durable != nil) })
	wg.Wait()
	cp.Stop()
	for i, sess := range s.ready { // ranges that were already complete
		sess.Close()
		delete(s.ready, i)
	}
	if failed != nil && s.spare != nil {
		s.spare.Close()
		s.spare = nil
	}
	res := Result{Size: s.state.Size, StartOffset: start}
	res.Attempts = 1 // like a single stream: 1 plus every failed attempt
	for _, r := range results {
		res.Transferred += r.Transferred
		res.Attempts += max(r.Attempts-1, 0)
		res.Resumes += r.Resumes
		res.Restarts += r.Restarts
		if r.Attempts > 0 {
			res.Segments++
		}
	}
	res.ResentBytes = max(0, res.Transferred-(res.Size-start))
	res.Duration = time.Since(began)
	err := failed
	if serr := s.saveState(); serr != nil && err == nil {
		err = &localError{op: "write state", err: serr}
	}
	if err == nil {
		return res, nil
	}
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Op: s.op, Path: s.path, Err: err}
	}
	e.Committed, e.Attempts = s.sum.Load(), res.Attempts
	return res, e
}

// saveState makes the data durable, then records how far every range got.
func (s *segmenter) saveState() error { return s.checkpoint(true, true) }

// checkpoint records how far every range got. A full one makes the data
// durable first (downloads) and syncs the record; a light one records the
// bytes written since the last full one only as Written, which counts on
// a rerun only if the machine did not restart meanwhile.
//
// The record is synced when sync is set; the periodic checkpoints of an
// upload only raise what it proves, and need no fsync.
func (s *segmenter) checkpoint(full, sync bool) error {
	// What is recorded is taken before the data is made durable, so the
	// record never claims a byte written after the sync.
	s.mu.Lock()
	snap := *s.state
	snap.Segments = slices.Clone(s.state.Segments)
	for i, lw := range s.acking {
		g := &snap.Segments[i]
		if lw.unconfirmed {
			// Handed over, not acknowledged: the next run reads back
			// what landed.
			g.Sent = max(g.Sent, lw.w.Acked())
		} else {
			g.Done = max(g.Done, min(lw.base+lw.w.Acked(), g.End-g.Start))
		}
	}
	s.mu.Unlock()
	if full && s.durable != nil {
		if err := s.durable(); err != nil {
			return err
		}
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	abandoned := s.abandoned
	if s.synced == nil {
		s.synced = make([]int64, len(snap.Segments))
	}
	for i := range snap.Segments {
		g := &snap.Segments[i]
		g.Written = g.Done
		if s.durable != nil {
			if full {
				s.synced[i] = g.Done
			}
			// A range that started over since is not done to its old mark.
			s.synced[i] = min(s.synced[i], g.Done)
			g.Done = s.synced[i]
		}
	}
	s.mu.Unlock()
	if abandoned {
		if err := os.Remove(s.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return snap.write(s.statePath, sync)
}

// abandon makes every later saveState delete the state file.
func (s *segmenter) abandon() {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	s.abandoned = true
	s.mu.Unlock()
	_ = os.Remove(s.statePath)
}

// runSegment moves one range with its own attempts and backoff.
func (s *segmenter) runSegment(ctx context.Context, i int) (Result, error) {
	s.mu.Lock()
	length := s.state.Segments[i].End - s.state.Segments[i].Start
	s.mu.Unlock()
	r := newRunner(s.op, s.path, s.dial, s.cfg)
	r.res.Size = length
	r.res.StartOffset = -1
	r.committed = func() int64 { return s.segment(i).Done }
	s.mu.Lock()
	r.pending = s.ready[i]
	delete(s.ready, i)
	s.mu.Unlock()
	r.onFailure = func() { _ = s.saveState() }
	res, err := r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		return s.attempt(ctx, sess, a, i, s.segment(i))
	})
	if r.kept != nil {
		s.keepSpare(r.kept)
	}
	return res, err
}

// liveWriter is a range's running writer, opened base bytes after the
// range's start.
type liveWriter struct {
	w           protocol.Writer
	base        int64
	unconfirmed bool // Acked counts bytes handed over, not acknowledged
}

// setAcking sets (or with a nil writer clears) the running writer of
// range i, for the checkpoints.
func (s *segmenter) setAcking(i int, lw liveWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acking == nil {
		s.acking = make(map[int]liveWriter)
	}
	if lw.w == nil {
		delete(s.acking, i)
	} else {
		s.acking[i] = lw
	}
}

// hold keeps the bytes range i's stream brought from before its start.
func (s *segmenter) hold(i int, w []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.windows == nil {
		s.windows = make(map[int][]byte)
	}
	s.windows[i] = w
}

// checkWindows compares, once every range is written, the bytes each
// range's stream brought from before its start with what the range before
// wrote there. A mismatch means the server sent that range from another
// offset than asked: the transfer fails with ErrVerify (and its state is
// dropped, so the next run starts over). A window of one byte value proves nothing either way; there the
// offset probe of the run is the proof.
func (s *segmenter) checkWindows(local io.ReaderAt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.windows {
		g := &s.state.Segments[i]
		lo := g.Start - int64(len(w))
		mine := make([]byte, len(w))
		if _, err := local.ReadAt(mine, lo); err != nil {
			return &Error{Op: s.op, Path: s.path, Err: &localError{op: "read", err: err}}
		}
		if bytes.Equal(mine, w) {
			continue
		}
		s.sum.Add(-g.Done)
		g.Done = 0
		return &Error{Op: s.op, Path: s.path, Committed: s.sum.Load(), Err: fmt.Errorf("%w: segment %d: %w", ErrVerify, i, errMisaligned)}
	}
	return nil
}

// keepSpare keeps one logged-in session of a finished range for the final
// verification, and closes any other.
func (s *segmenter) keepSpare(sess protocol.Session) {
	s.mu.Lock()
	old := s.spare
	s.spare = sess
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

func (s *segmenter) segment(i int) segState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Segments[i]
}

// setDone records that range i holds v bytes.
func (s *segmenter) setDone(i int, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.state.Segments[i]
	s.sum.Add(v - g.Done)
	g.Done = v
}

// setSent records that the failed attempt of range i handed v bytes after
// its Done to a writer that acknowledged none of them.
func (s *segmenter) setSent(i int, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.Segments[i].Sent = v
}

// setLanded records that range i holds v bytes, as read back, and nothing
// is pending.
func (s *segmenter) setLanded(i int, v int64) {
	s.setDone(i, v)
	s.setSent(i, 0)
}

// moved reports n more bytes of range i at the destination (downloads
// write them themselves) to the state and the progress callback.
func (s *segmenter) moved(i, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.Segments[i].Done += int64(n)
	total := s.sum.Add(int64(n))
	if s.progress != nil {
		s.progress(total, s.state.Size)
	}
}

// sending reports that the running attempt of range i has sent v bytes
// that are not acknowledged yet (uploads), for the progress callback.
func (s *segmenter) sending(i int, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[i] = v
	if s.progress != nil {
		total := s.sum.Load()
		for _, l := range s.live {
			total += l
		}
		s.progress(min(total, s.state.Size), s.state.Size)
	}
}

// segWriter counts what one range of a download wrote.
type segWriter struct {
	w io.Writer
	s *segmenter
	i int
	m *meter
}

func (w *segWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if n > 0 {
		w.m.add(n)
		w.s.moved(w.i, n)
	}
	return n, err
}

// downloadSegments downloads path into dst over n sessions at once (or as
// many ranges as the state file of an earlier run holds), then verifies
// the whole file.
func downloadSegments(ctx context.Context, dial protocol.Dialer, path string, dst LocalFile, info protocol.FileInfo, n int, first protocol.Session, pre *predial, cfg Config) (Result, error) {
	st, err := loadSidecar(cfg.StatePath)
	if err != nil || len(st.Segments) < 2 || !st.matches(path, info.Size, info.ModTime, 0) {
		// No usable state: start every range from zero.
		if err := dst.Truncate(0); err != nil {
			first.Close()
			pre.closeAll()
			return Result{}, &Error{Op: "download", Path: path, Err: &localError{op: "truncate", err: err}}
		}
		st = &sidecar{Path: path, Size: info.Size, ModTime: info.ModTime, Segments: split(info.Size, n)}
		if err := st.save(cfg.StatePath); err != nil {
			first.Close()
			pre.closeAll()
			return Result{}, &Error{Op: "download", Path: path, Err: &localError{op: "write state", err: err}}
		}
	}
	// Bytes written but not synced by a run that died count while the
	// kernel that holds them still runs.
	durable := make([]int64, len(st.Segments))
	sameBoot := st.sameBoot()
	for i := range st.Segments {
		durable[i] = st.Segments[i].Done
		st.Segments[i].Done = st.Segments[i].proven(sameBoot)
	}
	s := newSegmenter("download", path, dial, cfg, st)
	s.synced = durable
	s.ready[0] = first
	pre.assign(s)
	s.durable = dst.Sync
	s.attempt = func(ctx context.Context, sess protocol.Session, a *attempt, i int, g segState) error {
		return downloadRange(ctx, sess, a, s, dst, i, g)
	}
	res, err := s.run(ctx)
	if err != nil {
		return res, err
	}
	if err := s.checkWindows(dst); err != nil {
		return res, err
	}
	// Verify the whole file on one more session.
	d := &download{dst: dst, path: path, size: info.Size, mtime: info.ModTime}
	vres, err := s.finish(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		return d.finish(ctx, sess, a)
	})
	res.Attempts += vres.Attempts - 1
	res.Verified = vres.Verified
	if err != nil {
		return res, err
	}
	_ = os.Remove(cfg.StatePath)
	return res, nil
}

// finish runs the verification step of a segmented transfer on one more
// session, with the usual retries.
func (s *segmenter) finish(ctx context.Context, do func(ctx context.Context, sess protocol.Session, a *attempt) error) (Result, error) {
	r := newRunner(s.op, s.path, s.dial, s.cfg)
	r.res.Size, r.res.StartOffset = s.state.Size, s.state.Size
	r.pending, s.spare = s.spare, nil
	return r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		a.start(s.state.Size)
		return do(ctx, sess, a)
	})
}

// downloadRange moves what is left of range i: it checks the remote file
// did not change, re-reads the Overlap bytes before the resume point and
// compares them with what is on disk, then copies up to the range's end.
func downloadRange(ctx context.Context, sess protocol.Session, a *attempt, s *segmenter, dst LocalFile, i int, g segState) error {
	info, err := sess.Stat(ctx, s.path)
	if err != nil {
		return err
	}
	if info.Size != s.state.Size || !info.ModTime.Equal(s.state.ModTime) {
		return &protocol.Error{Op: "download", Path: s.path, Err: fmt.Errorf("%w: the remote file changed during a segmented download; run again to start over", ErrSourceChanged)}
	}
	a.dog.touch()
	off := g.Start + g.Done
	k := min(a.r.cfg.overlap(), g.Done)
	// A range that starts from nothing reads the end of the range before
	// it too, to be compared once that one is written: the proof that
	// this stream starts where it was asked to.
	held := g.Done == 0 && g.Start > 0
	if held {
		k = min(a.r.cfg.overlap(), g.Start)
	}
	var rd io.ReadCloser
	if rr, ok := sess.(protocol.RangeReader); ok {
		rd, err = rr.OpenRangeReader(ctx, s.path, off-k, g.End-(off-k))
	} else {
		rd, err = sess.OpenReader(ctx, s.path, off-k)
	}
	if err != nil {
		return err
	}
	defer rd.Close()
	if held && k > 0 {
		w := make([]byte, k)
		if _, err := io.ReadFull(rd, w); err != nil {
			return err
		}
		s.hold(i, w)
	} else if k > 0 {
		same, err := equalStream(rd, dst, off-k, k, a)
		if err != nil {
			return err
		}
		if !same {
			// This range's partial is not the remote's: fetch it again.
			a.r.restart(a, fmt.Sprintf("segment %d: the last %d bytes differ from the remote file", i, k))
			s.setDone(i, 0)
			return &protocol.Error{Op: "download", Path: s.path, Kind: protocol.ErrTransient, Err: errors.New("segment restarted")}
		}
	}
	if g.Done > 0 && a.n > 1 {
		a.r.res.Resumes++
	}
	m := a.start(g.Done)
	var localErr error
	w := &segWriter{w: &writebackWriter{w: &localWriter{w: io.NewOffsetWriter(dst, off), err: &localErr}, f: dst, off: off}, s: s, i: i, m: m}
	want := g.End - off
	n, copyErr := copyRange(w, rd, want)
	if localErr != nil {
		return localErr
	}
	if copyErr != nil {
		return copyErr
	}
	a.keep = true // the session may verify the file, or carry another range
	if n != want {
		return &protocol.Error{Op: "read", Path: s.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: segment %d ended at %d, want %d", io.ErrUnexpectedEOF, i, off+n, g.End)}
	}
	return nil
}

// segmentSuffix is appended to the temporary name of a segmented upload,
// which may hold holes until every range is written: a later single-stream
// run must never take it for a sequential partial.
const segmentSuffix = ".seg"

// maybeSegmentedUpload runs a segmented upload when a state file of an
// earlier one matches the source, or when the server can write ranges and
// the file and link call for it; done is false when a single stream should
// be used.
//
// When it does not run one, it may return a logged-in session (first) for
// the single stream to go on with.
func maybeSegmentedUpload(ctx context.Context, dial protocol.Dialer, src Source, final string, cfg Config) (res Result, done bool, first protocol.Session, err error) {
	fi, err := src.Stat()
	if err != nil {
		return Result{}, false, nil, nil // the single stream reports it
	}
	target := cfg.TempPath + segmentSuffix
	st, stErr := loadSidecar(cfg.StatePath)
	if stErr == nil && st.matches(cfg.TempPath, fi.Size(), fi.ModTime(), 1) {
		return Result{}, false, nil, nil // a single stream's partial: it goes on as one
	}
	if stErr == nil && (len(st.Segments) < 2 || !st.matches(target, fi.Size(), fi.ModTime(), 0)) {
		stErr = errors.New("stale state")
		_ = os.Remove(cfg.StatePath)
	}

	// One login first: the other ranges log in only once it succeeded (a
	// rejected password is tried once, not once per range).
	var canRanges, unconfirmed bool
	var rtt time.Duration
	r := newRunner("upload", final, dial, cfg)
	res, err = r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		_, canRanges = sess.(protocol.RangeWriter)
		_, unconfirmed = sess.(protocol.UnconfirmedRangeWriter)
		began := time.Now()
		_, err := remoteSize(ctx, sess, cfg.TempPath)
		rtt = time.Since(began)
		if err == nil {
			rtt = roundTrip(ctx, sess, cfg.TempPath, rtt)
		}
		if err == nil && stErr == nil {
			// A state is trusted only while the remote file it describes
			// holds at least what it records.
			var size int64
			var exists bool
			size, exists, err = remoteFile(ctx, sess, target)
			if err == nil && (!exists || size < st.written()) {
				stErr = errors.New("the remote file no longer holds what the state records")
				_ = os.Remove(cfg.StatePath)
			}
		}
		a.keep = true
		return err
	})
	if err != nil {
		return res, true, nil, err
	}
	first = r.kept
	ready := map[int]protocol.Session{0: first}
	var pre *predial
	if stErr == nil {
		pre = startPredial(ctx, dial, len(st.Segments)-1)
	} else {
		n := chooseSegments(cfg, fi.Size(), rtt)
		if unconfirmed && cfg.Segments == 0 {
			// Most FTP servers cannot take one file over several
			// connections (vsftpd's default upload lock, proftpd,
			// pure-ftpd): segment only when asked to.
			n = 1
		}
		if !canRanges || n <= 1 {
			return Result{}, false, first, nil
		}
		pre = startPredial(ctx, dial, n-1)
		st = &sidecar{Path: target, Size: fi.Size(), ModTime: fi.ModTime(), Segments: split(fi.Size(), n)}
		if unconfirmed {
			var err error
			ready, err = probeRanges(ctx, dial, first, pre, src, st, rtt, cfg)
			if err != nil {
				if ctx.Err() != nil {
					return Result{}, true, nil, &Error{Op: "upload", Path: final, Err: context.Cause(ctx)}
				}
				reason := err
				var pf *probeFailed
				if errors.As(err, &pf) {
					reason = pf.err
				}
				cfg.logger().Warn("segmented upload not possible, using one stream", "path", final, "err", reason)
				if cfg.OnEvent != nil {
					cfg.OnEvent(Event{Kind: EventSingleStream, Reason: reason.Error()})
				}
				return Result{}, false, nil, nil
			}
		}
		if err := st.save(cfg.StatePath); err != nil {
			pre.closeAll()
			if !unconfirmed {
				return Result{}, false, first, nil // no state, no segments
			}
			for _, sess := range ready {
				sess.Close()
			}
			return Result{}, false, nil, nil
		}
	}
	s := newSegmenter("upload", final, dial, cfg, st)
	for i, sess := range ready {
		s.ready[i] = sess
	}
	pre.assign(s)
	s.attempt = func(ctx context.Context, sess protocol.Session, a *attempt, i int, g segState) error {
		return uploadRange(ctx, sess, a, s, src, i, g)
	}
	res, err = s.run(ctx)
	if err != nil {
		return res, true, nil, err
	}
	u := &upload{src: src, size: fi.Size(), mtime: fi.ModTime(), final: final, target: target, safe: fi.Size()}
	vres, err := s.finish(ctx, u.finish)
	res.Attempts += vres.Attempts - 1
	res.Verified = vres.Verified
	if err == nil {
		_ = os.Remove(cfg.StatePath)
	}
	return res, true, nil, err
}

// uploadRange moves what is left of range i of an upload over a range
// writer, after comparing the Overlap bytes before the resume point.
func uploadRange(ctx context.Context, sess protocol.Session, a *attempt, s *segmenter, src Source, i int, g segState) error {
	rw, ok := sess.(protocol.RangeWriter)
	if !ok {
		return &protocol.Error{Op: "upload", Path: s.path, Kind: protocol.ErrUnsupported, Err: errors.New("the session cannot write ranges")}
	}
	if fi, err := src.Stat(); err != nil || fi.Size() != s.state.Size || !fi.ModTime().Equal(s.state.ModTime) {
		return &localError{op: "read", err: fmt.Errorf("%w during a segmented upload; run again to start over", ErrSourceChanged)}
	}
	_, unconfirmed := sess.(protocol.UnconfirmedRangeWriter)
	off := g.Start + g.Done
	checked := false
	if unconfirmed && g.Sent > 0 {
		// The last attempt's writer acknowledged nothing: read back what
		// landed.
		n, err := landed(ctx, sess, s.state.Path, src, off, g.Sent, landedWindow, a)
		if err != nil {
			return err
		}
		s.setLanded(i, g.Done+n)
		g.Done += n
		off += n
		checked = n > 0
	}
	if k := min(a.r.cfg.overlap(), g.Done); k > 0 && !checked {
		same, err := a.sameRange(ctx, sess, s.state.Path, src, off-k, off)
		if err != nil {
			return err
		}
		if !same {
			a.r.restart(a, fmt.Sprintf("segment %d: the remote's last %d bytes differ from the source", i, k))
			s.setDone(i, 0)
			return &protocol.Error{Op: "upload", Path: s.path, Kind: protocol.ErrTransient, Err: errors.New("segment restarted")}
		}
	}
	if off == g.End { // all of it landed before the last attempt failed
		a.start(g.Done)
		a.keep = true
		return nil
	}
	if unconfirmed && off == 0 {
		// Only a sequential writer may write at offset 0, and it would
		// cut the other ranges: this state cannot go on.
		s.abandon()
		return &localError{op: "resume", err: fmt.Errorf("%w: the start of the segmented upload's temporary file no longer matches the source; run again to start over", ErrSourceChanged)}
	}
	w, err := rw.OpenRangeWriter(ctx, s.state.Path, off)
	if err != nil {
		return err
	}
	if g.Done > 0 && a.n > 1 {
		a.r.res.Resumes++
	}
	m := a.start(g.Done)
	m.progress = func(done, _ int64) { s.sending(i, done-g.Done) }
	// Checkpoints record what the server acknowledged so far, or for an
	// unconfirmed writer what was handed to it, to be read back.
	s.setAcking(i, liveWriter{w: w, base: g.Done, unconfirmed: unconfirmed})
	var localErr error
	rd := &countingReader{r: &localReader{r: io.NewSectionReader(src, off, g.End-off), err: &localErr}, m: m}
	n, copyErr := io.Copy(w, rd)
	closeErr := w.Close()
	s.setAcking(i, liveWriter{})
	verdict := serverVerdict(copyErr, closeErr)
	switch {
	case !unconfirmed:
		a.acked = w.Acked()
		s.setDone(i, g.Done+a.acked)
	case verdict == nil && localErr == nil:
		// The server confirmed the transfer, which for FTP only means the
		// data connection ended: read back the range's tail to be sure.
		a.acked = n
		got, err := landed(ctx, sess, s.state.Path, src, off, n, confirmWindow, a)
		if err != nil {
			s.setSent(i, n)
			return err
		}
		s.setLanded(i, g.Done+got)
		if got != n {
			return &protocol.Error{Op: "write", Path: s.path, Kind: protocol.ErrTransient,
				Err: fmt.Errorf("segment %d: %d bytes confirmed, %d landed", i, n, got)}
		}
	default:
		a.acked = w.Acked() // handed over; what landed is read back next
		s.setSent(i, a.acked)
	}
	s.sending(i, 0)
	if localErr != nil {
		return localErr
	}
	if verdict != nil {
		return verdict
	}
	if n != g.End-off || a.acked != n {
		return &protocol.Error{Op: "write", Path: s.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("segment %d: %d bytes acknowledged of %d", i, a.acked, g.End-off)}
	}
	a.keep = true // the session may verify the file
	return nil
}

// errRangeDone ends a WriteTo once a range is complete.
var errRangeDone = errors.New("range complete")

// rangeWriter passes on at most n bytes, then fails with errRangeDone.
type rangeWriter struct {
	w io.Writer
	n int64
}

func (r *rangeWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.w.Write(p)
	r.n -= int64(n)
	if err == nil && r.n == 0 {
		err = errRangeDone
	}
	return n, err
}

// copyRange copies the next n bytes of rd to w: through rd's WriterTo when
// it has one (SFTP keeps its requests pipelined there; what it read ahead
// past the range is dropped), else with a large buffer.
func copyRange(w io.Writer, rd io.Reader, n int64) (int64, error) {
	if wt, ok := rd.(io.WriterTo); ok {
		lw := &rangeWriter{w: w, n: n}
		got, err := wt.WriteTo(lw)
		if errors.Is(err, errRangeDone) {
			err = nil
		}
		return min(got, n), err
	}
	return io.CopyBuffer(w, io.LimitReader(rd, n), make([]byte, copyBufferSize))
}

// predial logs in sessions in the background while a probe runs, so that
// the ranges of a segmented transfer start without waiting for their own
// logins after it (a login costs several round trips; vsftpd adds a delay).
type predial struct {
	ch      chan dialed
	pending int
	// cancel ends the logins still running (their sessions are not
	// wanted any more).
	cancel context.CancelFunc
}

type dialed struct {
	sess protocol.Session
	err  error
}

// startPredial starts k logins; each ends when dial returns (ctx bounds
// them).
func startPredial(ctx context.Context, dial protocol.Dialer, k int) *predial {
	ctx, cancel := context.WithCancel(ctx)
	p := &predial{ch: make(chan dialed, max(k, 0)), pending: max(k, 0), cancel: cancel}
	for range p.pending {
		go func() {
			sess, err := dial(ctx)
			p.ch <- dialed{sess, err}
		}()
	}
	return p
}

// take waits for the next login to end.
func (p *predial) take(ctx context.Context) (protocol.Session, error) {
	if p.pending == 0 {
		return nil, errors.New("no session left")
	}
	select {
	case d := <-p.ch:
		p.pending--
		return d.sess, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// rest waits for every login left and returns the sessions that logged in.
func (p *predial) rest() []protocol.Session {
	var out []protocol.Session
	for ; p.pending > 0; p.pending-- {
		if d := <-p.ch; d.err == nil {
			out = append(out, d.sess)
		}
	}
	p.cancel() // every login has ended: release the context
	return out
}

// assign hands the sessions left to the ranges of s that have none yet,
// in order, and closes any left over.
func (p *predial) assign(s *segmenter) {
	i := 0
	for _, sess := range p.rest() {
		for i < len(s.state.Segments) && s.ready[i] != nil {
			i++
		}
		if i < len(s.state.Segments) {
			s.ready[i] = sess
		} else {
			sess.Close()
		}
	}
}

// closeAll ends the logins still running and closes every session.
func (p *predial) closeAll() {
	p.cancel()
	for _, sess := range p.rest() {
		sess.Close()
	}
}
