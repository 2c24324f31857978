package sftp_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
)

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func TestExecHash(t *testing.T) {
	requireTools(t, "sh", "sha256sum", "md5sum", "sha1sum", "head", "tail")
	ts := newTestServer(t, nil)
	ts.execDir = t.TempDir() // the "login directory" differs from SFTP's
	s := dial(t, ts)
	data := randomBytes(t, 1<<20+999)
	name := "it's $(x) \"f\".bin"
	if err := os.WriteFile(filepath.Join(ts.dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A file of the same name in the exec directory must not be hashed.
	if err := os.WriteFile(filepath.Join(ts.execDir, name), []byte("decoy"), 0o600); err != nil {
		t.Fatal(err)
	}
	algos := s.HashAlgorithms()
	if len(algos) == 0 || algos[0] != "sha1" || !slices.Contains(algos, "sha256") || slices.Contains(algos, "crc32") { // fastest exec tool first
		t.Fatalf("HashAlgorithms = %v", algos)
	}
	ctx := context.Background()
	size := int64(len(data))
	for _, r := range [][2]int64{{0, -1}, {0, size}, {size - 65536, size}, {4096, 4096 + 65536}, {0, 65536}, {size, -1}, {10, 10}, {size - 5, size + 100}} {
		got, err := s.Hash(ctx, name, "sha256", r[0], r[1])
		if err != nil {
			t.Fatalf("Hash %v: %v", r, err)
		}
		end := r[1]
		if end < 0 || end > size {
			end = size
		}
		if want := sha256.Sum256(data[r[0]:end]); !bytes.Equal(got, want[:]) {
			t.Errorf("Hash %v = %x, want %x", r, got, want)
		}
	}
	abs, err := s.Hash(ctx, filepath.Join(ts.dir, name), "md5", 0, -1)
	if want := md5.Sum(data); err != nil || !bytes.Equal(abs, want[:]) {
		t.Fatalf("md5 of the absolute path = %x, %v; want %x", abs, err, want)
	}
	if _, err := s.Hash(ctx, "missing", "sha256", 0, -1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Hash(missing) = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Hash(ctx, name, "crc32", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
		t.Fatalf("Hash(crc32) = %v, want ErrUnsupported", err)
	}
	if _, err := s.Hash(ctx, name, "whirlpool", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
		t.Fatalf("Hash(whirlpool) = %v, want ErrUnsupported", err)
	}
	if _, err := s.Hash(ctx, "a\nb", "sha256", 0, -1); !errors.Is(err, protocol.ErrInvalidPath) {
		t.Fatalf("Hash(CR/LF) = %v, want ErrInvalidPath", err)
	}
	if _, err := s.Hash(ctx, name, "sha256", 5, 2); err == nil {
		t.Fatal("inverted range accepted")
	}
	probes := ts.execs.Load()
	s.HashAlgorithms()
	if ts.execs.Load() != probes {
		t.Fatal("HashAlgorithms probed again")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t)
}

func TestExecHashOff(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.execDir = t.TempDir()
	s := dial(t, ts, hsftp.WithExecHash(false))
	if a := s.HashAlgorithms(); len(a) != 0 {
		t.Fatalf("HashAlgorithms = %v, want none", a)
	}
	if _, err := s.Hash(context.Background(), "x", "sha256", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
		t.Fatalf("Hash = %v, want ErrUnsupported", err)
	}
	if n := ts.execs.Load(); n != 0 {
		t.Fatalf("%d commands run with WithExecHash(false)", n)
	}
}

func TestNoHashWithoutExecOrCheckFile(t *testing.T) {
	ts := newTestServer(t, nil) // refuses exec; pkg/sftp's server has no check-file
	s := dial(t, ts)
	if a := s.HashAlgorithms(); len(a) != 0 {
		t.Fatalf("HashAlgorithms = %v, want none", a)
	}
	if _, err := s.Hash(context.Background(), "x", "sha256", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
		t.Fatalf("Hash = %v, want ErrUnsupported", err)
	}
	// The session still works after the probes.
	upload(t, s, "after.bin", 0, []byte("ok"))
	_ = s.Close()
	checkNoLeaks(t)
}
