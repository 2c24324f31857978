package resume_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openhaul/haul/resume"
)

func TestSegmentedDownloadSurvivesCuts(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4<<20 + 123)
	s.put("f", src)
	s.cuts = []int64{700_000, 2_100_000, 3_500_000}
	cfg := segmentedCfg(t)
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) {
		t.Fatal("content differs")
	}
	if res.Attempts != 1+3 || res.Segments != 4 || res.ResentBytes != 0 || res.Verified != "size" {
		t.Fatalf("%+v", res)
	}
	if _, err := os.Stat(cfg.StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file left behind")
	}
}

func TestSegmentedDownloadResumesFromStateFile(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	s.put("f", src)
	cfg := segmentedCfg(t)
	f := tempFile(t)
	// First run: interrupted once about half the file is there.
	ctx, cancel := context.WithCancel(context.Background())
	first := cfg
	first.Progress = func(done, total int64) {
		if done >= 2<<20 {
			cancel()
		}
	}
	if _, err := resume.Download(ctx, s.dial, "f", f, first); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if _, err := os.Stat(cfg.StatePath); err != nil {
		t.Fatalf("no state file after an interrupted run: %v", err)
	}
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) {
		t.Fatal("content differs")
	}
	if res.StartOffset < 1<<20 {
		t.Fatalf("did not resume the ranges: %+v", res)
	}
}

func TestAutoSegmentsUseOneStreamOnAFastLink(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	s.put("f", src)
	cfg := fastCfg()
	cfg.MinSegmentSize = 1 << 20
	cfg.StatePath = filepath.Join(t.TempDir(), "state")
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil || !bytes.Equal(readAll(t, f), src) {
		t.Fatal(err)
	}
	if s.dials != 1 { // the probe's session goes on as the single stream
		t.Fatalf("%d dials for a fast link, res %+v", s.dials, res)
	}
}

func TestRateLimitPaces(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(2 << 20)
	cfg := fastCfg()
	cfg.RateLimit = 4 << 20
	begin := time.Now()
	if _, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg); err != nil {
		t.Fatal(err)
	}
	// The bucket starts full (a tenth of the rate): 2 MiB at 4 MiB/s need
	// at least (2 - 0.4) / 4 = 0.4 s. Only the lower bound is certain.
	if d := time.Since(begin); d < 350*time.Millisecond {
		t.Fatalf("2 MiB at 4 MiB/s took %v", d)
	}
}

func TestSegmentedUploadSurvivesCutsAndResumesFromState(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4<<20 + 77)
	s.cuts = []int64{500_000, 1_900_000}
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	// First run: interrupted half-way; the state file keeps the ranges.
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
	if s.file("f.part.seg") == nil {
		t.Fatal("the segmented upload did not write to its own temporary name")
	}
	res, err := resume.Upload(context.Background(), s.rangeDial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || s.file("f.part.seg") != nil {
		t.Fatal("content differs or temporary file left")
	}
	if res.StartOffset < 1<<20 {
		t.Fatalf("did not resume the ranges: %+v", res)
	}
	if _, err := os.Stat(cfg.StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file left behind")
	}
}

func TestSegmentedUploadNeedsRangeWriter(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil || !bytes.Equal(s.file("f"), src) || res.Attempts != 1 {
		t.Fatalf("err=%v res=%+v", err, res)
	}
}

// TestSegmentedUnconfirmedUploadReadsBack runs a segmented upload over
// FTP-like range writers whose cuts lose what was in flight: each range
// must resume where its bytes really end, found by reading back, including
// across runs of zero bytes that read the same as holes.
func TestSegmentedUnconfirmedUploadReadsBack(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(8<<20 + 123)
	// Zeros where cuts land, so holes and data read the same there.
	for _, at := range []int{1_300_000, 5_000_000} {
		clear(src[at-200_000 : at+200_000])
	}
	s.cuts = []int64{1_000_000, 3_000_000, 5_200_000}
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	const inFlight = 300_000
	res, err := resume.Upload(context.Background(), s.ftpRangeDial(inFlight, false, nil), memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || s.file("f.part.seg") != nil {
		t.Fatal("content differs or temporary file left")
	}
	if res.Segments != 4 || res.Attempts < 4 {
		t.Fatalf("not segmented, or the cuts missed: %+v", res)
	}
	// Each cut loses what was in flight, and no more than that plus a
	// window (the read-back never re-sends what it proved landed).
	if res.ResentBytes > 3*(inFlight+32<<10) {
		t.Errorf("re-sent %d bytes for 3 cuts of %d in flight", res.ResentBytes, inFlight)
	}
	t.Logf("%+v", res)
}

// TestSegmentedUnconfirmedUploadProbeFallsBack: a server that writes past
// the end at the end instead fails the probe, and one stream does the job.
func TestSegmentedUnconfirmedUploadProbeFallsBack(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(4 << 20)
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	res, err := resume.Upload(context.Background(), s.ftpRangeDial(0, true, nil), memSrc(src), "f", cfg)
	if err != nil || !bytes.Equal(s.file("f"), src) || res.Segments > 1 {
		t.Fatalf("err=%v res=%+v", err, res)
	}
	if s.file("f.part.seg") != nil {
		t.Error("the probe's file was left")
	}
}

// segmentedCfg is fastCfg with four 1 MiB-or-larger ranges and a state
// file in a temporary directory.
func segmentedCfg(t *testing.T) resume.Config {
	cfg := fastCfg()
	cfg.Segments = 4
	cfg.MinSegmentSize = 1 << 20
	cfg.StatePath = filepath.Join(t.TempDir(), "state")
	return cfg
}

// TestSegmentedUnconfirmedUploadChecksConfirmedRanges: a range writer
// whose transfer is confirmed although its last bytes never landed (an
// FTP 226 after a middlebox's FIN) must not leave a hole.
func TestSegmentedUnconfirmedUploadChecksConfirmedRanges(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(8 << 20)
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	var fins atomic.Int32
	fins.Store(2)
	res, err := resume.Upload(context.Background(), s.ftpRangeDial(200_000, false, &fins), memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("content differs")
	}
	if fins.Load() > 0 || res.Attempts < 3 {
		t.Fatalf("the FIN cuts did not fire or were not noticed: %+v", res)
	}
}

// TestSegmentedUnconfirmedUploadAbandonsDeadState: when range 0's partial
// no longer matches the source, an FTP-like upload cannot rewrite it (a
// write at offset 0 would cut the other ranges): the run fails, its state
// file is gone, and the next run starts over and succeeds.
func TestSegmentedUnconfirmedUploadAbandonsDeadState(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(8 << 20)
	cfg := segmentedCfg(t)
	cfg.TempPath = "f.part"
	// The segment probe gives up after half the stall timeout (1 s with
	// fastCfg), then uses one stream: a loaded machine could make that
	// happen and the test find no ranges. It is not about stalls.
	cfg.StallTimeout = time.Minute
	dial := s.ftpRangeDial(0, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	first := cfg
	first.Progress = func(done, total int64) {
		if done >= 4<<20 {
			cancel()
		}
	}
	if _, err := resume.Upload(ctx, dial, memSrc(src), "f", first); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	b, err := resume.ReadRecord(cfg.StatePath, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state %s: %v", b, err)
	}
	segs, _ := st["segments"].([]any)
	if len(segs) != 4 {
		t.Fatalf("state %s", b)
	}
	// Range 0, whatever the scheduler let it reach: 128 KiB recorded,
	// nothing pending, and its last recorded byte differs from the source.
	const done = 128 << 10
	seg0 := segs[0].(map[string]any)
	seg0["done"], seg0["sent"] = done, 0
	if b, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.StatePath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	part := s.file("f.part.seg")
	part[done-1] ^= 0xff
	s.put("f.part.seg", part)
	if _, err := resume.Upload(context.Background(), dial, memSrc(src), "f", cfg); !errors.Is(err, resume.ErrSourceChanged) {
		t.Fatalf("second run: %v", err)
	}
	if _, err := os.Stat(cfg.StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the dead state file is still there")
	}
	if _, err := resume.Upload(context.Background(), dial, memSrc(src), "f", cfg); err != nil || !bytes.Equal(s.file("f"), src) {
		t.Fatalf("third run: %v", err)
	}
}
