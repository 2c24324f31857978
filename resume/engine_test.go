package resume_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

// fastCfg keeps backoffs short so unit tests stay fast.
func fastCfg() resume.Config {
	return resume.Config{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, StallTimeout: 2 * time.Second}
}

// memSource is an in-memory upload source.
type memSource struct {
	*bytes.Reader
	mtime time.Time
}

type memInfo struct {
	size  int64
	mtime time.Time
}

func (m memInfo) Name() string       { return "mem" }
func (m memInfo) Size() int64        { return m.size }
func (m memInfo) Mode() fs.FileMode  { return 0o644 }
func (m memInfo) ModTime() time.Time { return m.mtime }
func (m memInfo) IsDir() bool        { return false }
func (m memInfo) Sys() any           { return nil }

func (m *memSource) Stat() (fs.FileInfo, error) { return memInfo{m.Size(), m.mtime}, nil }

func memSrc(b []byte) *memSource {
	return &memSource{Reader: bytes.NewReader(b), mtime: time.Unix(1, 0)}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestUploadClean(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("remote differs")
	}
	if res.Attempts != 1 || res.Resumes != 0 || res.ResentBytes != 0 || res.Verified != "size" || res.Transferred != int64(len(src)) {
		t.Fatalf("result %+v", res)
	}
}

func TestUploadResumesAfterCuts(t *testing.T) {
	s := newFakeServer()
	s.cuts = []int64{300_000, 700_000}
	src := randomBytes(1 << 20)
	var events []resume.EventKind
	cfg := fastCfg()
	cfg.OnEvent = func(e resume.Event) { events = append(events, e.Kind) }
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("remote differs")
	}
	if res.Attempts != 3 || res.Resumes != 2 || res.ResentBytes != 0 {
		t.Fatalf("result %+v", res)
	}
	if len(events) == 0 || events[len(events)-1] != resume.EventVerified {
		t.Fatalf("events %v", events)
	}
}

func TestUploadResumesAtAckedMarkNotRemoteSize(t *testing.T) {
	s := newFakeServer()
	s.cuts = []int64{400_000}
	s.holes = 100_000 // the failed writer leaves garbage past its acknowledged mark
	src := randomBytes(1 << 20)
	_, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("remote differs: resumed past the acknowledged mark")
	}
}

func TestUploadRemoteLargerRestarts(t *testing.T) {
	s := newFakeServer()
	s.put("f", randomBytes(2<<20))
	src := randomBytes(1 << 20)
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.Restarts != 1 {
		t.Fatalf("remote differs or restarts=%d", res.Restarts)
	}
}

func TestUploadResumeRefusedRestartsFromZero(t *testing.T) {
	s := newFakeServer()
	s.refuseOffset = true
	src := randomBytes(1 << 20)
	s.put("f", src[:1000])
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.Restarts != 1 {
		t.Fatalf("remote differs or restarts=%d", res.Restarts)
	}
}

func TestUploadCloseErrorAfterAllBytesIsConfirmedBySize(t *testing.T) {
	s := newFakeServer()
	s.closeErrAfterAll = true
	src := randomBytes(1 << 20)
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || res.ResentBytes != 0 || !bytes.Equal(s.file("f"), src) {
		t.Fatalf("result %+v", res)
	}
}

func TestAuthErrorIsNeverRetried(t *testing.T) {
	s := newFakeServer()
	authErr := &protocol.Error{Op: "login", Code: 530, Kind: protocol.ErrAuth}
	s.dialErrs = []error{authErr, nil, nil}
	src := randomBytes(1000)
	_, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if !errors.Is(err, protocol.ErrAuth) {
		t.Fatalf("err = %v", err)
	}
	var re *resume.Error
	if !errors.As(err, &re) || re.Attempts != 1 || s.dials != 1 {
		t.Fatalf("attempts=%v dials=%d", re, s.dials)
	}
}

func TestRetriesExhaustedWithoutProgress(t *testing.T) {
	s := newFakeServer()
	transient := &protocol.Error{Op: "dial", Kind: protocol.ErrTransient}
	for range 10 {
		s.dialErrs = append(s.dialErrs, transient)
	}
	cfg := fastCfg()
	cfg.MaxAttempts = 3
	src := randomBytes(1000)
	_, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if !errors.Is(err, resume.ErrRetriesExhausted) || !errors.Is(err, protocol.ErrTransient) || s.dials != 3 {
		t.Fatalf("err = %v, dials = %d", err, s.dials)
	}
}

func TestProgressResetsAttemptBudget(t *testing.T) {
	s := newFakeServer()
	for i := range 8 {
		s.cuts = append(s.cuts, int64(i+1)*100_000)
	}
	cfg := fastCfg()
	cfg.MaxAttempts = 2
	src := randomBytes(1 << 20)
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil || res.Attempts != 9 {
		t.Fatalf("err=%v res=%+v", err, res)
	}
}

func TestDownloadNotFoundIsNotRetried(t *testing.T) {
	s := newFakeServer()
	f := tempFile(t)
	_, err := resume.Download(context.Background(), s.dial, "missing", f, fastCfg())
	if !errors.Is(err, fs.ErrNotExist) || s.dials != 1 {
		t.Fatalf("err=%v dials=%d", err, s.dials)
	}
}

func tempFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readAll(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDownloadResumesAfterCutsAndStall(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src)
	s.cuts = []int64{200_000}
	s.stallAt = 600_000
	cfg := fastCfg()
	cfg.StallTimeout = 200 * time.Millisecond
	var failures []error
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventFailed {
			failures = append(failures, e.Err)
		}
	}
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || res.Resumes != 2 || res.ResentBytes != 0 {
		t.Fatalf("res %+v", res)
	}
	if len(failures) != 2 || !errors.Is(failures[1], resume.ErrStalled) {
		t.Fatalf("failures %v", failures)
	}
}

func TestDownloadRestartsWhenRemoteChanges(t *testing.T) {
	s := newFakeServer()
	v1, v2 := randomBytes(1<<20), randomBytes(1<<20+7)
	s.put("f", v1)
	s.cuts = []int64{300_000}
	cfg := fastCfg()
	// Replace the remote file when the cut fires.
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventFailed {
			s.put("f", v2)
		}
	}
	f := tempFile(t)
	res, err := resume.Download(context.Background(), s.dial, "f", f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), v2) || res.Restarts != 1 {
		t.Fatalf("spliced or no restart: %+v", res)
	}
}

func TestCancelReturnsPromptlyWithoutLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src)
	s.stallAt = 100_000
	ctx, cancel := context.WithCancel(context.Background())
	cfg := fastCfg()
	cfg.StallTimeout = time.Hour
	cfg.Progress = func(done, total int64) {
		if done >= 100_000 {
			cancel()
		}
	}
	f := tempFile(t)
	start := time.Now()
	_, err := resume.Download(ctx, s.dial, "f", f, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("goroutines: %d before, %d after", before, n)
	}
}

func TestInvalidPathRejected(t *testing.T) {
	s := newFakeServer()
	_, err := resume.Upload(context.Background(), s.dial, memSrc(nil), "a\r\nDELE b", fastCfg())
	if !errors.Is(err, protocol.ErrInvalidPath) || s.dials != 0 {
		t.Fatalf("err=%v dials=%d", err, s.dials)
	}
}

func TestRepeatedStorageFailureIsNoSpace(t *testing.T) {
	s := newFakeServer()
	s.fullAt = 300_000
	src := randomBytes(1 << 20)
	_, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	var re *resume.Error
	if !errors.Is(err, protocol.ErrNoSpace) || !errors.As(err, &re) || re.Attempts > 3 || re.Committed != 300_000 {
		t.Fatalf("err = %v", err)
	}
	if got := s.file("f"); !bytes.Equal(got, src[:300_000]) {
		t.Fatalf("partial not kept: %d bytes", len(got))
	}
}
