package resume_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/openhaul/haul/resume"
)

func TestUploadCorruptedRemoteTailRestarts(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	bad := bytes.Clone(src[:500_000])
	bad[len(bad)-10] ^= 0xff // the partial's tail is not the source's
	s.put("f", bad)
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), src) || res.Restarts != 1 {
		t.Fatalf("spliced or no restart: %+v", res)
	}
}

func TestDownloadCorruptedLocalTailRestarts(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.put("f", src)
	f := tempFile(t)
	bad := bytes.Clone(src[:400_000])
	bad[len(bad)-1] ^= 1
	if _, err := f.Write(bad); err != nil {
		t.Fatal(err)
	}
	res, err := resume.Download(context.Background(), s.dial, "f", f, fastCfg())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), src) || res.Restarts != 1 {
		t.Fatalf("spliced or no restart: %+v", res)
	}
}

func TestVerifyByServerHash(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	s.cuts = []int64{300_000}
	res, err := resume.Upload(context.Background(), s.hashingDial(false), memSrc(src), "f", fastCfg())
	if err != nil || res.Verified != "sha256" {
		t.Fatalf("err=%v verified=%q", err, res.Verified)
	}
	f := tempFile(t)
	res, err = resume.Download(context.Background(), s.hashingDial(false), "f", f, fastCfg())
	if err != nil || res.Verified != "sha256" || !bytes.Equal(readAll(t, f), src) {
		t.Fatalf("err=%v verified=%q", err, res.Verified)
	}
}

func TestHashMismatchFailsWithoutDeleting(t *testing.T) {
	s := newFakeServer()
	src := randomBytes(1 << 20)
	cfg := fastCfg()
	cfg.Overlap = -1 // the lying hash would also fail the overlap check
	_, err := resume.Upload(context.Background(), s.hashingDial(true), memSrc(src), "f", cfg)
	var re *resume.Error
	if !errors.Is(err, resume.ErrVerify) || !errors.As(err, &re) || re.Attempts != 1 {
		t.Fatalf("err = %v", err)
	}
	if !bytes.Equal(s.file("f"), src) {
		t.Fatal("the uploaded file was touched")
	}
}

func TestVerifyHashPolicyNeedsAServerHash(t *testing.T) {
	s := newFakeServer()
	cfg := fastCfg()
	cfg.Verify = resume.VerifyHash
	_, err := resume.Upload(context.Background(), s.dial, memSrc(randomBytes(1000)), "f", cfg)
	if err == nil {
		t.Fatal("want an error: the server cannot hash")
	}
}

func TestVerifyReadback(t *testing.T) {
	s := newFakeServer()
	cfg := fastCfg()
	cfg.Verify = resume.VerifyReadback
	src := randomBytes(1 << 20)
	res, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil || res.Verified != "readback" {
		t.Fatalf("err=%v verified=%q", err, res.Verified)
	}
}

func TestUploadToTempThenRename(t *testing.T) {
	s := newFakeServer()
	old := randomBytes(100)
	s.put("f", old)
	src := randomBytes(1 << 20)
	s.cuts = []int64{300_000}
	var sawOld bool
	cfg := fastCfg()
	cfg.TempPath = "f.part"
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventFailed {
			sawOld = bytes.Equal(s.file("f"), old)
		}
	}
	_, err := resume.Upload(context.Background(), s.dial, memSrc(src), "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !sawOld || !bytes.Equal(s.file("f"), src) || s.file("f.part") != nil {
		t.Fatalf("not atomic: old kept during transfer=%v", sawOld)
	}
}

// A source modified between attempts ends as a copy of the new version.
func TestUploadSourceChangedRestarts(t *testing.T) {
	s := newFakeServer()
	dir := t.TempDir()
	path := dir + "/src"
	v1, v2 := randomBytes(1<<20), randomBytes(1<<20+100)
	if err := os.WriteFile(path, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.cuts = []int64{300_000}
	cfg := fastCfg()
	cfg.OnEvent = func(e resume.Event) {
		if e.Kind == resume.EventFailed {
			// Rewrite in place, with a later mtime.
			if err := os.WriteFile(path, v2, 0o644); err != nil {
				t.Error(err)
			}
			_ = os.Chtimes(path, time.Now(), time.Now().Add(time.Second))
		}
	}
	res, err := resume.Upload(context.Background(), s.dial, f, "f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.file("f"), v2) || res.Restarts != 1 || res.Size != int64(len(v2)) {
		t.Fatalf("not the new version: %+v", res)
	}
}
