package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/openhaul/haul/transfer"
)

func mustGet(t *testing.T, s transfer.Store, key string) []byte {
	t.Helper()
	v, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return v
}

func TestFileStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "j")
	s := &transfer.FileStore{Dir: dir}
	if _, err := s.Get(ctx, "a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get of a missing key: %v, want fs.ErrNotExist", err)
	}
	vals := map[string][]byte{"a": []byte(`{"x":1}`), "b-2": {0, '\n', ' ', 0xff}, "c": {}}
	for k, v := range vals {
		if err := s.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "a", []byte("second")); err != nil {
		t.Fatal(err)
	}
	vals["a"] = []byte("second")
	if err := s.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	delete(vals, "c")
	if err := s.Put(ctx, "bad/key", nil); err == nil {
		t.Fatal("Put accepted a key with a slash")
	}
	if err := s.Put(ctx, "big", make([]byte, 64<<10+1)); err == nil {
		t.Fatal("Put accepted a value over 64 KiB")
	}
	// This FileStore, and a new one reading the log (another process).
	for _, st := range []*transfer.FileStore{s, {Dir: dir}} {
		for k, v := range vals {
			if got := mustGet(t, st, k); !bytes.Equal(got, v) {
				t.Errorf("Get(%s) = %q, want %q", k, got, v)
			}
		}
		if _, err := st.Get(ctx, "c"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get of a deleted key: %v", err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "records.log"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log: %v %v, want mode 0600", fi, err)
	}
}

// TestFileStoreTornLine: a line a crash cut short is ignored, and the
// records before and after it read back.
func TestFileStoreTornLine(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &transfer.FileStore{Dir: dir}
	if err := s.Put(ctx, "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "records.log")
	b, _ := os.ReadFile(log)
	// A second record of "before", cut in its checksum, and garbage.
	torn := append(bytes.Clone(b[:len(b)-5]), "\nbefore AAAA 0123"...)
	if err := os.WriteFile(log, append(b, torn[len(b):]...), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := &transfer.FileStore{Dir: dir}
	if err := s2.Put(ctx, "after", []byte("2")); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*transfer.FileStore{s2, {Dir: dir}} {
		if got := mustGet(t, st, "before"); string(got) != "1" {
			t.Errorf("before = %q", got)
		}
		if got := mustGet(t, st, "after"); string(got) != "2" {
			t.Errorf("after = %q", got)
		}
	}
}

// TestFileStoreCompacts: a log mostly of superseded lines is rewritten
// with the live ones when read.
func TestFileStoreCompacts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &transfer.FileStore{Dir: dir}
	for i := range 3000 {
		if err := s.Put(ctx, fmt.Sprintf("k%d", i%10), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "records.log")
	before, _ := os.Stat(log)
	s2 := &transfer.FileStore{Dir: dir}
	for i := range 10 {
		if got := mustGet(t, s2, fmt.Sprintf("k%d", i)); string(got) != fmt.Sprint(2990+i) {
			t.Errorf("k%d = %q", i, got)
		}
	}
	after, _ := os.Stat(log)
	if after.Size()*10 > before.Size() {
		t.Errorf("log %d bytes before reading, %d after: not compacted", before.Size(), after.Size())
	}
	if got := mustGet(t, &transfer.FileStore{Dir: dir}, "k3"); string(got) != "2993" {
		t.Errorf("after compaction k3 = %q", got)
	}
}

// TestFileStoreConcurrent: parallel Puts (8 workers of a batch) all land.
func TestFileStoreConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &transfer.FileStore{Dir: dir}
	mustGet := func(k string) []byte { v, _ := s.Get(ctx, k); return v } // reads the log first
	_ = mustGet("x")
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				k := fmt.Sprintf("w%d-%d", w, i)
				if err := s.Put(ctx, k, []byte(k)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for _, st := range []*transfer.FileStore{s, {Dir: dir}} {
		for w := range 8 {
			for i := range 50 {
				k := fmt.Sprintf("w%d-%d", w, i)
				if v, err := st.Get(ctx, k); err != nil || string(v) != k {
					t.Fatalf("Get(%s) = %q, %v", k, v, err)
				}
			}
		}
	}
}

// TestFileStorePlantedLog: a log planted as a link is never read nor
// written through: it is replaced.
func TestFileStorePlantedLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	other := &transfer.FileStore{Dir: filepath.Dir(victim)}
	if err := other.Put(ctx, "k", []byte("planted")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(filepath.Dir(victim), "records.log"), victim); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "records.log")); err != nil {
		t.Fatal(err)
	}
	s := &transfer.FileStore{Dir: dir}
	if v, err := s.Get(ctx, "k"); err == nil {
		t.Fatalf("Get through a planted link: %q", v)
	}
	before, _ := os.ReadFile(victim)
	if err := s.Put(ctx, "k2", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(victim); !bytes.Equal(before, after) {
		t.Fatal("Put wrote through a planted link")
	}
	if fi, err := os.Lstat(filepath.Join(dir, "records.log")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("the link was not replaced: %v %v", fi, err)
	}
	if got := mustGet(t, &transfer.FileStore{Dir: dir}, "k2"); string(got) != "v" {
		t.Fatalf("k2 = %q", got)
	}
}

// TestFileStoreLargestValue: a value of the largest size reads back, from
// this FileStore and from a new one reading the log.
func TestFileStoreLargestValue(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &transfer.FileStore{Dir: dir}
	big := bytes.Repeat([]byte{0xfe, 'x', '\n'}, 64<<10/3)
	if err := s.Put(ctx, "big", big); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "after", []byte("a")); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*transfer.FileStore{s, {Dir: dir}} {
		if got := mustGet(t, st, "big"); !bytes.Equal(got, big) {
			t.Fatalf("big: %d bytes back, want %d", len(got), len(big))
		}
		if got := mustGet(t, st, "after"); string(got) != "a" {
			t.Fatalf("after = %q", got)
		}
	}
}
