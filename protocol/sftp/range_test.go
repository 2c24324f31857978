package sftp_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
)

// rangeUpload writes data at offset through a range writer and checks
// Acked.
func rangeUpload(s *hsftp.Session, path string, offset int64, data []byte) error {
	w, err := s.OpenRangeWriter(context.Background(), path, offset)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		_ = w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if got := w.Acked(); got != int64(len(data)) {
		return &protocol.Error{Op: "test", Path: path, Err: io.ErrShortWrite}
	}
	return nil
}

func TestRangeWritersFillHalvesConcurrently(t *testing.T) {
	ts := newTestServer(t, nil)
	a := dial(t, ts, hsftp.WithConcurrency(8))
	b := dial(t, ts, hsftp.WithConcurrency(3), hsftp.WithPacketSize(20_000))
	data := randomBytes(t, 6<<20+777)
	half := int64(len(data) / 2)
	local := filepath.Join(ts.dir, "seg.bin")

	// The second half first, alone: the file starts with a hole.
	if err := rangeUpload(b, "seg.bin", half, data[half:]); err != nil {
		t.Fatalf("second half: %v", err)
	}
	if fi, err := os.Stat(local); err != nil || fi.Size() != int64(len(data)) {
		t.Fatalf("after the second half: %v, %v", fi, err)
	}
	// Both halves at once, on two sessions, the second with other data
	// first: neither may cut the other.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = rangeUpload(a, "seg.bin", 0, data[:half]) }()
	go func() { defer wg.Done(); errs[1] = rangeUpload(b, "seg.bin", half, data[half:]) }()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	got, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("file differs: %d bytes, want %d", len(got), len(data))
	}

	// Rewriting a small range at 0 leaves the rest and the size alone.
	patch := randomBytes(t, 1000)
	if err := rangeUpload(a, "seg.bin", 0, patch); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(patch), data[len(patch):]...)
	if got, _ := os.ReadFile(local); !bytes.Equal(got, want) {
		t.Fatalf("after a range rewrite at 0: %d bytes, want %d identical", len(got), len(want))
	}
	if _, err := a.OpenRangeWriter(context.Background(), "seg.bin", -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	if _, err := a.OpenRangeWriter(context.Background(), "a\nb", 0); err == nil {
		t.Fatal("bad path accepted")
	}
	_ = a.Close()
	_ = b.Close()
	checkNoLeaks(t)
}

func TestRangeWriterOpenFlags(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts)
	for _, off := range []int64{0, 1 << 20} {
		if err := rangeUpload(s, "/r", off, randomBytes(t, 100_000)); err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
	}
	ffs.mu.Lock()
	defer ffs.mu.Unlock()
	if len(ffs.writeFlags) != 2 {
		t.Fatalf("%d opens for writing, want 2", len(ffs.writeFlags))
	}
	for i, fl := range ffs.writeFlags {
		if fl.Trunc || fl.Append || !fl.Creat || !fl.Write || fl.Read || fl.Excl {
			t.Errorf("open %d: flags %+v, want write|creat only", i, fl)
		}
	}
}
