package resume_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/openhaul/haul/resume"
)

func TestRecordRoundTripInPlace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.json")
	for _, v := range []string{`{"long":"first value, longer than the next"}`, `{"v":2}`} {
		if err := resume.WriteRecord(p, []byte(v), false); err != nil {
			t.Fatal(err)
		}
		got, err := resume.ReadRecord(p, 1<<10)
		if err != nil || string(got) != v {
			t.Fatalf("ReadRecord = %q, %v; want %q", got, err, v)
		}
	}
	before, _ := os.Stat(p)
	if err := resume.WriteRecord(p, []byte(`{"v":3}`), true); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(p); !os.SameFile(before, after) {
		t.Error("the record's own file was replaced, not written in place")
	}
}

// TestRecordTorn: a record cut short, or mixed with the one before, fails
// its checksum; a plain JSON record (the format before checksums) reads.
func TestRecordTorn(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.json")
	if err := resume.WriteRecord(p, []byte(`{"done":100}`), false); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for _, torn := range [][]byte{b[:len(b)-1], b[:10], {}, bytes.Replace(b, []byte("100"), []byte("900"), 1)} {
		if err := os.WriteFile(p, torn, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := resume.ReadRecord(p, 1<<10); err == nil {
			t.Errorf("torn record %q read as %q", torn, got)
		}
	}
	if err := os.WriteFile(p, []byte(`{"old":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := resume.ReadRecord(p, 1<<10); err != nil || string(got) != `{"old":1}` {
		t.Errorf("plain record: %q, %v", got, err)
	}
}

// TestRecordNeverWritesThroughALink: a record planted as a link (or a
// file with a second link) is replaced, and its target left alone.
func TestRecordNeverWritesThroughALink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	for _, plant := range []func(p string) error{
		func(p string) error { return os.Symlink(victim, p) },
		func(p string) error { return os.Link(victim, p) },
	} {
		if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "s.json")
		_ = os.Remove(p)
		if err := plant(p); err != nil {
			t.Fatal(err)
		}
		if err := resume.WriteRecord(p, []byte(`{"v":1}`), false); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Fatalf("written through a planted link: %q", b)
		}
		if got, err := resume.ReadRecord(p, 1<<10); err != nil || string(got) != `{"v":1}` {
			t.Fatalf("ReadRecord after replacing the link: %q, %v", got, err)
		}
	}
}
