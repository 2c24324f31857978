package resume_test

// Reruns after a crash, and servers that lie: a new call of Upload or
// Download trusts no byte that its state file or a server-side hash does
// not prove, and `ok` always means byte-identical.

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

var errLogin = &protocol.Error{Op: "login", Code: 530, Kind: protocol.ErrAuth}

// stateCfg is fastCfg with a state file, as the transfer package sets.
func stateCfg(t *testing.T) resume.Config {
	cfg := fastCfg()
	cfg.StatePath = filepath.Join(t.TempDir(), "state")
	return cfg
}

// stopAfterCut arranges for the next call to end for good after at bytes
// of stream: the stream is cut there and the reconnection is refused, as
// when a process dies.
func stopAfterCut(s *fakeServer, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.moved = 0
	s.cuts = []int64{at}
	s.dialErrs = []error{nil, errLogin}
}

// zeroRun returns random bytes with [lo, hi) zeroed.
func zeroRun(n int, lo, hi int) []byte {
	b := randomBytes(n)
	clear(b[lo:hi])
	return b
}

func TestUploadRerunResumesWhatStateRecords(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	cfg := stateCfg(t)
	stopAfterCut(s, 500_000)
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.StartOffset != 500_000 || res.Restarts != 0 {
		t.Fatalf("%+v", res)
	}
	if _, err := os.Stat(cfg.StatePath); !errors.Is(err, fs.ErrNotExist) {
		t.Error("state file left after success")
	}
}

// A remote partial nobody recorded is not resumed: it is rewritten.
func TestUploadRerunWithoutStateRewrites(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src[:500_000])
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.StartOffset != 0 || res.Restarts != 1 {
		t.Fatalf("%+v", res)
	}
}

// A small source that no state record covers is sent whole, without
// asking the remote for a partial first (only the verification stats
// it); a cut within the process still resumes.
func TestSmallUploadIsSentWhole(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(512 << 10)
	s.put("f", src[:100_000]) // a partial nothing proves
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.StartOffset != 0 || res.Restarts != 0 || s.stats != 1 {
		t.Fatalf("%+v, %d stats, want 1 (the verification)", res, s.stats)
	}
	s.cuts = []int64{s.moved + 200_000}
	res, err = resume.Upload(context.Background(), s.dial, memSrc(src), "g", stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("g"), src) || res.Attempts != 2 || res.Resumes != 1 || res.ResentBytes != 0 {
		t.Fatalf("after a cut: %+v", res)
	}
}

// A session whose Size the server refuses degrades to Stat: the upload
// resumes after a cut and is verified as before.
func TestUploadWithoutSize(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(2 << 20)
	s.cuts = []int64{700_000}
	res, err := resume.Upload(context.Background(), s.noSizeDial, memSrc(src), "f", stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.Attempts != 2 || res.Resumes != 1 || res.Verified != "size" {
		t.Fatalf("%+v", res)
	}
}

// Where the server can hash, a hash of the partial proves it.
func TestRerunWithoutStateResumesWhatAHashProves(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src[:500_000])
	res, err := resume.Upload(context.Background(), s.hashingDial(false), memSrc(src), "f", stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.StartOffset != 500_000 || res.Restarts != 0 {
		t.Fatalf("upload: %+v", res)
	}
	f := tempFile(t)
	if _, err := f.Write(src[:300_000]); err != nil {
		t.Fatal(err)
	}
	res, err = resume.Download(context.Background(), s.hashingDial(false), "f", f, stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || res.StartOffset != 300_000 || res.Restarts != 0 {
		t.Fatalf("download: %+v", res)
	}
}

// Issue 9 case 1: writes in flight when the process died left a hole in
// the remote partial, and its tail (the last writes, which landed) matches
// the source, zeros on both sides. The rerun resumes at the recorded
// acknowledged mark, not at the remote size.
func TestUploadRerunDoesNotTrustUnacknowledgedTail(t *testing.T) {
	const acked, hole = 500_000, 256 << 10
	// The source is zero where the overlap window of the remote size
	// falls, and random in the hole.
	src := zeroRun(1<<20, acked+hole-(64<<10), acked+hole)
	s := newFakeServer()
	s.holes = hole
	cfg := stateCfg(t)
	stopAfterCut(s, acked)
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	if got := len(s.file("f")); got != acked+hole {
		t.Fatalf("the fake left %d bytes", got)
	}
	s.holes = 0
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("the rerun kept the hole")
	}
	if res.StartOffset != acked {
		t.Fatalf("resumed at %d, want the acknowledged mark %d", res.StartOffset, acked)
	}
}

// Issue 9 case 3: a new local file between runs.
func TestUploadRerunSourceReplaced(t *testing.T) {
	s := newFakeServer()
	v1 := randomBytes(1 << 20)
	v2 := bytes.Clone(v1)
	v2[100] ^= 1 // same tail: the overlap window cannot tell them apart
	cfg := stateCfg(t)
	stopAfterCut(s, 600_000)
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(v1), "f", cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	src2 := &memSource{Reader: bytes.NewReader(v2), mtime: time.Unix(2, 0)}
	res, err := resume.Upload(context.Background(), s.dial, src2, "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), v2) || res.Restarts != 1 {
		t.Fatalf("not the new source: %+v", res)
	}
}

func TestDownloadRerunResumesWhatStateRecords(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src)
	cfg := stateCfg(t)
	f := tempFile(t)
	stopAfterCut(s, 500_000)
	if _, err := resume.Download(context.Background(), s.dial, "f", f, cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || res.StartOffset != 500_000 || res.Restarts != 0 {
		t.Fatalf("%+v", res)
	}
	if _, err := os.Stat(cfg.StatePath); !errors.Is(err, fs.ErrNotExist) {
		t.Error("state file left after success")
	}
}

// Issue 9 case 2: a new remote file between runs (same size, new mtime).
func TestDownloadRerunRemoteReplaced(t *testing.T) {
	s := newFakeServer()
	v1 := randomBytes(1 << 20)
	v2 := bytes.Clone(v1)
	v2[100] ^= 1 // same tail: the overlap window cannot tell them apart
	s.put("f", v1)
	cfg := stateCfg(t)
	f := tempFile(t)
	stopAfterCut(s, 500_000)
	if _, err := resume.Download(context.Background(), s.dial, "f", f, cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	s.put("f", v2)
	s.mtime["f"] = s.mtime["f"].Add(time.Second)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), v2) || res.Restarts != 1 {
		t.Fatalf("a mix of two versions: %+v", res)
	}
}

// A local partial nobody recorded is not resumed.
func TestDownloadRerunWithoutStateRewrites(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src)
	f := tempFile(t)
	if _, err := f.Write(src[:400_000]); err != nil {
		t.Fatal(err)
	}
	res, err := resume.Download(context.Background(), s.dial, "f", f, stateCfg(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || res.Restarts != 1 || res.StartOffset != 0 {
		t.Fatalf("%+v", res)
	}
}

// Issue 9 case 5: the server ignores REST and the window before the resume
// point is a zero run wider than any overlap: only the stream's length
// shows the misalignment, and its bytes are never kept, even when a cut
// ends the stream exactly at the remote size.
func TestDownloadRestIgnoredBehindZeroRun(t *testing.T) {
	const zeros, cut, size = 18 << 20, 17 << 20, 20 << 20
	src := zeroRun(size, 0, zeros)
	s := newFakeServer()
	s.put("f", src)
	s.ignoreBelow = math.MaxInt64
	// A stream read with a 64 KiB window is cut where the local file
	// reaches the remote size.
	s.cuts = []int64{cut, cut + 64<<10 + (size - cut)}
	var restarts []string
	cfg := stateCfg(t)
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventRestart {
			restarts = append(restarts, e.Reason)
		}
	}
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) {
		t.Fatal("spliced a stream from the wrong offset")
	}
	if res.Restarts != 1 {
		t.Fatalf("restarts %v, %+v", restarts, res)
	}
}

// Issue 9 case 4: a segmented download from a server that ignores REST.
// The offset probe catches it and the download goes over one stream.
func TestSegmentedDownloadRestIgnored(t *testing.T) {
	src := randomBytes(4 << 20)
	s := newFakeServer()
	s.put("f", src)
	s.ignoreBelow = math.MaxInt64
	cfg := segmentedCfg(t)
	var single atomic.Int32
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventSingleStream {
			single.Add(1)
		}
	}
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || single.Load() != 1 || res.Segments != 0 {
		t.Fatalf("single-stream events %d, %+v", single.Load(), res)
	}
}

// A server that honours the offset probe but sends a range from zero: the
// window each range reads from before its start exposes it.
func TestSegmentedDownloadRangeFromWrongOffsetFails(t *testing.T) {
	src := randomBytes(4 << 20)
	s := newFakeServer()
	s.put("f", src)
	s.ignoreBelow = 3 << 20 // the probe reads the last 64 KiB correctly
	f := tempFile(t)
	_, err := resume.Download(context.Background(), s.dial, "f", f, segmentedCfg(t))
	if !errors.Is(err, resume.ErrVerify) {
		t.Fatalf("err = %v", err)
	}
}

// Issue 9 case 6: the error of the range that failed first is reported,
// not the cancellation it caused in the others.
func TestSegmentFailureReportsTheCause(t *testing.T) {
	src := randomBytes(4 << 20)
	s := newFakeServer()
	s.put("f", src)
	// Range 2 of 4 opens at 2 MiB minus its window.
	s.denyFrom, s.denyTo = 2<<20-(64<<10), 2<<20
	s.stallAt = 100_000 // keep the other ranges busy until cancelled
	f := tempFile(t)
	_, err := resume.Download(context.Background(), s.dial, "f", f, segmentedCfg(t))
	if !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("err = %v", err)
	}
}

// Issue 9 case 9: a partial that failed verification is never resumed as
// if it were good.
func TestVerifyFailureDropsTheState(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	cfg := stateCfg(t)
	stopAfterCut(s, 600_000)
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	// Damage the partial where no overlap window looks.
	s.mu.Lock()
	s.files["f"][1000] ^= 1
	s.mu.Unlock()
	rb := cfg
	rb.Verify = resume.VerifyReadback
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", rb); !errors.Is(err, resume.ErrVerify) {
		t.Fatalf("readback run: %v", err)
	}
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.Restarts != 1 {
		t.Fatalf("resumed a partial that failed verification: %+v", res)
	}
}

// Issue 9 case 8: empty files move like any other.
func TestZeroByteTransfers(t *testing.T) {
	s := newFakeServer()
	cfg := stateCfg(t)
	cfg.TempPath = "f.part"
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(nil), "f", cfg); err != nil {
		t.Fatal(err)
	}
	if b, ok := s.files["f"]; !ok || len(b) != 0 {
		t.Fatalf("remote empty file missing: %v", ok)
	}
	f := tempFile(t)
	if _, err := resume.Download(context.Background(), s.dial, "f", f, stateCfg(t)); err != nil {
		t.Fatal(err)
	}
}

// Issue 9 case 7: the rate limit holds for segmented uploads too.
func TestSegmentedUploadRateLimit(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	cfg.RateLimit = 8 << 20
	begin := time.Now()
	res, err := resume.Upload(context.Background(), s.rangeDial, memSrc(src), "f", cfg)
	if err != nil || res.Segments != 4 {
		t.Fatalf("%v %+v", err, res)
	}
	// The bucket starts with at most 1 MiB: 4 MiB at 8 MiB/s need at
	// least 3/8 s. Only the lower bound is certain.
	if d := time.Since(begin); d < 350*time.Millisecond {
		t.Fatalf("4 MiB at 8 MiB/s took %v", d)
	}
}

// Issue 10 case 9: a rejected password is tried once, however many
// segments were asked for: the other ranges log in only after a login
// succeeded.
func TestSegmentsLogInOnceWithAWrongPassword(t *testing.T) {
	for _, op := range []string{"download", "upload"} {
		t.Run(op, func(t *testing.T) {
			s := newFakeServer()
			s.put("f", randomBytes(4<<20))
			s.dialErrs = make([]error, 32)
			for i := range s.dialErrs {
				s.dialErrs[i] = errLogin
			}
			cfg := segmentedCfg(t)
			cfg.Segments = 1000
			var err error
			if op == "download" {
				_, err = resume.Download(context.Background(), s.dial, "f", tempFile(t), cfg)
			} else {
				cfg.TempPath = "f.part"
				_, err = resume.Upload(context.Background(), s.rangeDial, memSrc(randomBytes(4<<20)), "f", cfg)
			}
			if !errors.Is(err, protocol.ErrAuth) {
				t.Fatalf("err = %v", err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.dials != 1 {
				t.Fatalf("%d logins with a wrong password", s.dials)
			}
		})
	}
}

// No more sessions than the ranges need, and never more than MaxSegments.
func TestSegmentsCapped(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(20 << 20)
	s.put("f", src)
	cfg := segmentedCfg(t) // 1 MiB ranges at least
	cfg.Segments = 1000
	// 16 ranges at once under -race on a loaded 2-core machine can see a
	// range starve for seconds: this test is about logins, not stalls.
	cfg.StallTimeout = time.Minute
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A failed attempt (a stall on a loaded machine) may log in again.
	if res.Segments != resume.MaxSegments || s.dials > resume.MaxSegments+res.Attempts-1 {
		t.Fatalf("%d segments, %d logins", res.Segments, s.dials)
	}
}

// Issue 11 case 6: the state of a segmented upload whose remote file was
// removed is dropped, not trusted.
func TestSegmentedUploadStateOutlivesItsRemoteFile(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	ctx, cancel := context.WithCancel(context.Background())
	first := cfg
	first.Progress = func(done, total int64) {
		if done >= 2<<20 {
			cancel()
		}
	}
	if _, err := resume.Upload(ctx, s.rangeDial, memSrc(src), "f", first); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if _, err := os.Stat(cfg.StatePath); err != nil {
		t.Fatalf("no state: %v", err)
	}
	s.mu.Lock()
	delete(s.files, "f.part.seg")
	s.mu.Unlock()
	if _, err := resume.Upload(context.Background(), s.rangeDial, memSrc(src), "f", cfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("content differs")
	}
}

// Issue 11 case 3: a server that cannot start at an offset (no REST):
// every fault restarts from zero, in both directions, and says so.
func TestServerWithoutRestRestartsFromZero(t *testing.T) {
	src := randomBytes(1 << 20)
	t.Run("download", func(t *testing.T) {
		s := newFakeServer()
		s.put("f", src)
		s.noRest = true
		s.cuts = []int64{300_000}
		f := tempFile(t)
		res, err := resume.Download(context.Background(), s.dial, "f", f, stateCfg(t))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, f), src) || res.Restarts != 1 {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("upload", func(t *testing.T) {
		s := newFakeServer()
		s.noRest = true
		s.cuts = []int64{300_000}
		cfg := stateCfg(t)
		cfg.TempPath = "f.part"
		res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s.file("f"), src) || res.Restarts != 1 {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("segmented download", func(t *testing.T) {
		s := newFakeServer()
		s.put("f", randomBytes(4<<20))
		s.noRest = true
		f := tempFile(t)
		if _, err := resume.Download(context.Background(), s.dial, "f", f, segmentedCfg(t)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, f), s.file("f")) {
			t.Fatal("content differs")
		}
	})
}

// slowFirstStat is a session whose first Stat queues (behind a busy disk);
// later round trips are fast.
type slowFirstStat struct {
	fakeSession
	slowed *atomic.Bool
}

func (s *slowFirstStat) Stat(ctx context.Context, path string) (protocol.FileInfo, error) {
	if s.slowed.CompareAndSwap(false, true) {
		time.Sleep(30 * time.Millisecond) // the queued request, not a wait for an event
	}
	return s.fakeSession.Stat(ctx, path)
}

// Issue 11 case 7: one slow round trip on a fast link does not make a
// transfer split into segments.
func TestAutoSegmentsNeedMoreThanOneSlowSample(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	s.put("f", src)
	var slowed atomic.Bool
	dial := func(ctx context.Context) (protocol.Session, error) {
		sess, err := s.dial(ctx)
		if err != nil {
			return nil, err
		}
		return &slowFirstStat{fakeSession: *sess.(*fakeSession), slowed: &slowed}, nil
	}
	cfg := stateCfg(t)
	cfg.MinSegmentSize = 1 << 20
	f := tempFile(t)
	res, err := resume.Download(context.Background(), dial, "f", f, cfg)
	if err != nil || !bytes.Equal(readAll(t, f), src) {
		t.Fatal(err)
	}
	if res.Segments != 0 || s.dials != 1 {
		t.Fatalf("split on one slow sample: %+v, %d dials", res, s.dials)
	}
}

// A rename the server answers but does not do (yet) is not an ok.
func TestUploadChecksTheRenameHappened(t *testing.T) {
	s := newFakeServer()
	s.lazyRenames = 1
	src := randomBytes(1 << 20)
	cfg := stateCfg(t)
	cfg.TempPath = "f.part"
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || s.file("f.part") != nil || res.Attempts != 2 {
		t.Fatalf("%+v", res)
	}
}

// A state file that others may write proves nothing: a record planted in
// a shared directory never vouches for a partial.
func TestStateWritableByOthersIsNotTrusted(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src)
	cfg := stateCfg(t)
	f := tempFile(t)
	stopAfterCut(s, 500_000)
	if _, err := resume.Download(context.Background(), s.dial, "f", f, cfg); !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("first run: %v", err)
	}
	if err := os.Chmod(cfg.StatePath, 0o666); err != nil {
		t.Fatal(err)
	}
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || res.StartOffset != 0 || res.Restarts != 1 {
		t.Fatalf("trusted a state others may write: %+v", res)
	}
}
