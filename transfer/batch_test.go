package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
)

// stageTree writes n files under a new directory, in two subdirectories.
func stageTree(t *testing.T, n int) string {
	t.Helper()
	root := t.TempDir()
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("d%d", i%2))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), randomBytes(uint64(i), 1000+i*37), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestBatchAdaptsToConnectionLimit: a server that refuses a fourth
// connection (421) gets a batch of 8 workers through on 3 sessions, with
// no file failed.
func TestBatchAdaptsToConnectionLimit(t *testing.T) {
	srv := newFakeServer()
	srv.checker = true
	srv.connLimit = 3
	// Every upload waits at its end until the limit was hit, so that
	// sessions overlap whatever the machine's speed.
	srv.gate, srv.entered = make(chan struct{}), make(chan struct{}, 64)
	c := testClient(t, srv, Config{MaxConns: 8})
	src := stageTree(t, 40)
	done := make(chan struct{})
	var res BatchResult
	var err error
	go func() {
		defer close(done)
		res, err = c.UploadTree(context.Background(), src, "up", BatchOptions{Parallel: 8})
	}()
	for range 3 {
		<-srv.entered // three sessions hold an upload open
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		srv.mu.Lock()
		refused := srv.refused
		srv.mu.Unlock()
		if refused > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fourth connection was tried while three were open")
		}
		time.Sleep(time.Millisecond)
	}
	close(srv.gate) // srv.entered's buffer holds the other uploads' signals
	<-done
	if err != nil {
		t.Fatalf("%v (%+v)", err, res.Stats)
	}
	if res.Stats.Done != 40 {
		t.Fatalf("stats %+v", res.Stats)
	}
	if _, _, maxLive := srv.stats(); maxLive > 3 {
		t.Fatalf("%d sessions at once, server allows 3", maxLive)
	}
	c.pool.mu.Lock()
	capNow := c.pool.max
	c.pool.mu.Unlock()
	if capNow > 3 {
		t.Fatalf("pool cap %d after 421s, want <= 3", capNow)
	}
}

// TestBatchStopsAfterRejectedLogin: one rejected login fails the batch
// without a second login attempt.
func TestBatchStopsAfterRejectedLogin(t *testing.T) {
	srv := newFakeServer()
	srv.dialErr = &protocol.Error{Op: "login", Code: 530, Kind: protocol.ErrAuth, Err: errors.New("530 Login incorrect.")}
	c := testClient(t, srv, Config{MaxConns: 4})
	src := stageTree(t, 12)
	var jobs []Job
	for i := range 12 {
		jobs = append(jobs, Job{Local: filepath.Join(src, fmt.Sprintf("d%d", i%2), fmt.Sprintf("f%02d", i)), Remote: fmt.Sprintf("f%02d", i)})
	}
	res, err := c.UploadFiles(context.Background(), jobs, BatchOptions{Parallel: 3})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("err %v, want ErrAuth", err)
	}
	if dials, _, _ := srv.stats(); dials != 1 {
		t.Fatalf("%d logins tried, want 1", dials)
	}
	if res.Stats.Failed != 12 || res.Stats.Failures["auth"] != 12 {
		t.Fatalf("stats %+v", res.Stats)
	}
}

// TestBatchJournalSkipsVerified: a second batch skips every verified file
// and sends what changed.
func TestBatchJournalSkipsVerified(t *testing.T) {
	srv := newFakeServer()
	state := t.TempDir()
	c := testClient(t, srv, Config{StateDir: state})
	src := stageTree(t, 10)
	var mu sync.Mutex
	progress := map[string]int64{}
	o := BatchOptions{Progress: func(p string, done, total int64) {
		mu.Lock()
		progress[p] = done
		mu.Unlock()
	}}
	if _, err := c.UploadTree(context.Background(), src, "t", o); err != nil {
		t.Fatal(err)
	}
	if len(progress) != 10 {
		t.Fatalf("progress for %d files, want 10", len(progress))
	}
	// Change one file (size and time).
	changed := filepath.Join(src, "d0", "f00")
	if err := os.WriteFile(changed, []byte("new content"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(changed, later, later); err != nil {
		t.Fatal(err)
	}
	res, err := c.UploadTree(context.Background(), src, "t", BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Skipped != 9 || res.Stats.Done != 1 {
		t.Fatalf("rerun stats %+v, want 9 skipped, 1 sent", res.Stats)
	}
	if got := string(srv.file("t/d0/f00")); got != "new content" {
		t.Fatalf("remote has %q", got)
	}
	// Without a journal nothing is skipped.
	res, err = c.UploadTree(context.Background(), src, "t", BatchOptions{NoJournal: true})
	if err != nil || res.Stats.Done != 10 {
		t.Fatalf("no journal: %v %+v", err, res.Stats)
	}
}

func TestUnsafeName(t *testing.T) {
	for name, bad := range map[string]bool{"a": false, "..": true, `..\x`: true, "a/b": true, "a\x00": true, "a\nb": true, "-rf": false, "...": false} {
		if got := unsafeName(name) != ""; got != bad {
			t.Errorf("unsafeName(%q) = %v, want %v", name, got, bad)
		}
	}
}

func TestMkdirNoFollow(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := mkdirNoFollow(root, filepath.Join(root, "link", "sub")); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("through a link: %v, want ErrNotRegular", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "sub")); err == nil {
		t.Fatal("a directory was made through the link")
	}
	if err := mkdirNoFollow(root, filepath.Join(root, "a", "b")); err != nil {
		t.Fatal(err)
	}
}

// TestUploadFromReaderAt: an io.ReaderAt with a size uploads, resuming
// after a cut, and verifies.
func TestUploadFromReaderAt(t *testing.T) {
	srv := newFakeServer()
	srv.failWrites = 1
	c := testClient(t, srv, Config{})
	data := randomBytes(7, 3<<20)
	res, err := c.UploadFrom(context.Background(), bytes.NewReader(data), int64(len(data)), "r.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(srv.file("r.bin"), data) || res.Size != int64(len(data)) || res.Attempts < 2 {
		t.Fatalf("result %+v", res)
	}
}

// memWriterAt is a plain io.WriterAt (no ReadAt).
type memWriterAt struct {
	mu sync.Mutex
	b  []byte
}

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

// rwAt can also be read back.
type rwAt struct{ memWriterAt }

func (m *rwAt) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestDownloadToWriterAt(t *testing.T) {
	srv := newFakeServer()
	data := randomBytes(9, 2<<20+123)
	srv.put("x.bin", data)
	c := testClient(t, srv, Config{})
	for name, w := range map[string]interface {
		io.WriterAt
	}{"plain": &memWriterAt{}, "readback": &rwAt{}} {
		res, err := c.DownloadTo(context.Background(), "x.bin", w)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got []byte
		switch w := w.(type) {
		case *memWriterAt:
			got = w.b
		case *rwAt:
			got = w.b
		}
		if !bytes.Equal(got, data) || res.Size != int64(len(data)) || res.Verified == "" {
			t.Fatalf("%s: result %+v, %d bytes", name, res, len(got))
		}
	}
}

// TestPoolWaitsForABusyServer: a server that refuses the first
// connections for having too many (other clients hold them) is waited
// for, not failed, when the pool holds none of its connections.
func TestPoolWaitsForABusyServer(t *testing.T) {
	srv := newFakeServer()
	srv.busyDials = 2
	c := testClient(t, srv, Config{})
	if err := c.MkdirAll(context.Background(), "a/b"); err != nil {
		t.Fatal(err)
	}
	if dials, _, _ := srv.stats(); dials != 3 {
		t.Fatalf("%d dials, want 3 (2 refused, then one)", dials)
	}
}
