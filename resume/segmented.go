package resume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
)

// segState is one byte range of a segmented download and how much of it
// is at the destination: [Start, Start+Done) is written.
type segState struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	Done  int64 `json:"done"`
}

// sidecar is the state file of a segmented download, kept beside the
// partial file so an interrupted run resumes every range where it stopped.
type sidecar struct {
	Path     string     `json:"path"`
	Size     int64      `json:"size"`
	ModTime  time.Time  `json:"mtime"`
	Segments []segState `json:"segments"`
}

func loadSidecar(path string) (*sidecar, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s sidecar
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// save writes the state atomically. Callers sync the data first, so the
// state never claims bytes that are not on disk.
func (s *sidecar) save(path string) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

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
	n := cfg.Segments
	if n == 0 {
		if rtt < autoSegmentRTT {
			return 1
		}
		n = autoSegments
	}
	return int(max(1, min(int64(n), size/minSeg)))
}

// probe dials once to learn the remote file's size and the round trip.
func probe(ctx context.Context, dial protocol.Dialer, path string, cfg Config) (protocol.FileInfo, time.Duration, error) {
	var info protocol.FileInfo
	var rtt time.Duration
	r := newRunner("download", path, dial, cfg)
	_, err := r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		began := time.Now()
		var err error
		info, err = sess.Stat(ctx, path)
		rtt = time.Since(began)
		return err
	})
	return info, rtt, err
}

// segmentedDownload moves the ranges of a download over several sessions at
// once, each range resuming on its own after a fault, and verifies the
// file as a whole.
type segmentedDownload struct {
	dial      protocol.Dialer
	cfg       Config
	path      string
	dst       LocalFile
	statePath string
	state     *sidecar

	mu       sync.Mutex // serializes callbacks and state saves
	sum      atomic.Int64
	progress func(done, total int64)
}

func downloadSegments(ctx context.Context, dial protocol.Dialer, path string, dst LocalFile, info protocol.FileInfo, n int, cfg Config) (Result, error) {
	began := time.Now()
	s := &segmentedDownload{dial: dial, cfg: cfg, path: path, dst: dst, statePath: cfg.StatePath}
	st, err := loadSidecar(cfg.StatePath)
	if err != nil || st.Path != path || st.Size != info.Size || !st.ModTime.Equal(info.ModTime) {
		// No usable state: start every range from zero.
		if err := dst.Truncate(0); err != nil {
			return Result{}, &Error{Op: "download", Path: path, Err: &localError{op: "truncate", err: err}}
		}
		st = &sidecar{Path: path, Size: info.Size, ModTime: info.ModTime, Segments: split(info.Size, n)}
		if err := st.save(cfg.StatePath); err != nil {
			return Result{}, &Error{Op: "download", Path: path, Err: &localError{op: "write state", err: err}}
		}
	}
	s.state = st
	var start int64
	for _, g := range st.Segments {
		start += g.Done
	}
	s.sum.Store(start)

	// Callbacks come from several goroutines: serialize them.
	if cfg.OnEvent != nil {
		on := cfg.OnEvent
		s.cfg.OnEvent = func(e Event) { s.mu.Lock(); defer s.mu.Unlock(); on(e) }
	}
	s.progress = cfg.Progress
	s.cfg.Progress = nil

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]Result, len(st.Segments))
	errs := make([]error, len(st.Segments))
	var wg sync.WaitGroup
	for i := range st.Segments {
		if st.Segments[i].Done >= st.Segments[i].End-st.Segments[i].Start {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.runSegment(ctx, i)
			if errs[i] != nil {
				cancel() // one range failed for good: stop the others
			}
		}()
	}
	wg.Wait()

	res := Result{Size: info.Size, StartOffset: start, Verified: ""}
	for _, r := range results {
		res.Transferred += r.Transferred
		res.Attempts += r.Attempts
		res.Resumes += r.Resumes
		res.Restarts += r.Restarts
	}
	res.ResentBytes = max(0, res.Transferred-(res.Size-start))
	if err := s.saveState(); err != nil && firstErr(errs) == nil {
		errs = append(errs, &localError{op: "write state", err: err})
	}
	if err := firstErr(errs); err != nil {
		res.Duration = time.Since(began)
		var e *Error
		if errors.As(err, &e) {
			e.Committed = s.sum.Load()
			e.Attempts = res.Attempts
			return res, e
		}
		return res, &Error{Op: "download", Path: path, Committed: s.sum.Load(), Attempts: res.Attempts, Err: err}
	}

	// Verify the whole file on one more session.
	d := &download{dst: dst, path: path, size: info.Size, mtime: info.ModTime}
	r := newRunner("download", path, dial, s.cfg)
	r.res.StartOffset = info.Size
	vres, err := r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		a.start(info.Size)
		return d.finish(ctx, sess, a)
	})
	res.Attempts += vres.Attempts - 1
	res.Verified = vres.Verified
	res.Duration = time.Since(began)
	if err != nil {
		return res, err
	}
	_ = os.Remove(cfg.StatePath)
	return res, nil
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// saveState syncs the data, then records how far every range got.
func (s *segmentedDownload) saveState() error {
	if err := s.dst.Sync(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.save(s.statePath)
}

// runSegment moves one range with its own attempts and backoff.
func (s *segmentedDownload) runSegment(ctx context.Context, i int) (Result, error) {
	s.mu.Lock()
	g := &s.state.Segments[i]
	length := g.End - g.Start
	s.mu.Unlock()
	r := newRunner("download", s.path, s.dial, s.cfg)
	r.res.Size = length
	r.res.StartOffset = -1
	r.committed = func() int64 { return s.done(i) }
	r.onFailure = func() { _ = s.saveState() }
	return r.run(ctx, func(ctx context.Context, sess protocol.Session, a *attempt) error {
		return s.attempt(ctx, sess, a, i)
	})
}

func (s *segmentedDownload) done(i int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Segments[i].Done
}

func (s *segmentedDownload) attempt(ctx context.Context, sess protocol.Session, a *attempt, i int) error {
	info, err := sess.Stat(ctx, s.path)
	if err != nil {
		return err
	}
	if info.Size != s.state.Size || !info.ModTime.Equal(s.state.ModTime) {
		return &protocol.Error{Op: "download", Path: s.path, Err: fmt.Errorf("%w: the remote file changed during a segmented download; run again to start over", ErrSourceChanged)}
	}
	a.dog.touch()
	s.mu.Lock()
	g := s.state.Segments[i]
	s.mu.Unlock()
	off := g.Start + g.Done
	k := min(a.r.cfg.overlap(), g.Done)
	rd, err := sess.OpenReader(ctx, s.path, off-k)
	if err != nil {
		return err
	}
	defer rd.Close()
	if k > 0 {
		same, err := equalStream(rd, s.dst, off-k, k, a)
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
	w := &segWriter{w: &writebackWriter{w: &localWriter{w: io.NewOffsetWriter(s.dst, off), err: &localErr}, f: s.dst, off: off}, s: s, i: i, m: m}
	want := g.End - off
	buf := make([]byte, 1<<20)
	n, copyErr := io.CopyBuffer(w, io.LimitReader(rd, want), buf)
	if localErr != nil {
		return localErr
	}
	if copyErr != nil {
		return copyErr
	}
	if n != want {
		return &protocol.Error{Op: "read", Path: s.path, Kind: protocol.ErrTransient,
			Err: fmt.Errorf("%w: segment %d ended at %d, want %d", io.ErrUnexpectedEOF, i, off+n, g.End)}
	}
	return nil
}

func (s *segmentedDownload) setDone(i int, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.state.Segments[i]
	s.sum.Add(v - g.Done)
	g.Done = v
}

// segWriter counts what one range wrote, for the state, the progress
// callback and the stall watchdog.
type segWriter struct {
	w io.Writer
	s *segmentedDownload
	i int
	m *meter
}

func (w *segWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if n > 0 {
		w.m.add(n)
		w.s.mu.Lock()
		w.s.state.Segments[w.i].Done += int64(n)
		w.s.mu.Unlock()
		total := w.s.sum.Add(int64(n))
		if w.s.progress != nil {
			w.s.mu.Lock()
			w.s.progress(total, w.s.state.Size)
			w.s.mu.Unlock()
		}
	}
	return n, err
}
