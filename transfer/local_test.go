package transfer_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/transfer"
)

func TestLocalPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		local, remote string
		want          string // "" when an error is wanted
		err           error
	}{
		{filepath.Join(dir, "new"), "d/f.bin", filepath.Join(dir, "new"), nil},
		{file, "d/f.bin", file, nil}, // an existing regular file is replaced
		{dir, "d/f.bin", filepath.Join(dir, "f.bin"), nil},
		{dir + "/", "d/f.bin", filepath.Join(dir, "f.bin"), nil},
		{dir + "/.", "/abs/f.bin", filepath.Join(dir, "f.bin"), nil},
		{dir, "sub", "", transfer.ErrNotRegular}, // dir/sub is a directory
		{dir, "d/", "", transfer.ErrInvalidPath},
		{dir, "..", "", transfer.ErrInvalidPath},
		{filepath.Join(dir, "missing") + "/", "f", "", fs.ErrNotExist},
		{file + "/", "f", "", syscall.ENOTDIR},
		{fifo, "f", "", transfer.ErrNotRegular},
		{os.DevNull, "f", "", transfer.ErrNotRegular},
		{link, "f", "", transfer.ErrNotRegular},
		{"", "f", "", nil},
	} {
		got, err := transfer.LocalPath(tc.local, tc.remote)
		switch {
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("LocalPath(%q, %q) = %q, %v; want %q", tc.local, tc.remote, got, err, tc.want)
		case tc.want == "" && err == nil:
			t.Errorf("LocalPath(%q, %q) = %q, want an error", tc.local, tc.remote, got)
		case tc.want == "" && tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("LocalPath(%q, %q): %v, want %v", tc.local, tc.remote, err, tc.err)
		}
	}
}

func TestRemotePath(t *testing.T) {
	for _, tc := range []struct{ local, remote, want string }{
		{"/x/f.bin", "d/g.bin", "d/g.bin"},
		{"/x/f.bin", "d/", "d/f.bin"},
		{"/x/f.bin", "", "f.bin"},
		{"f.bin", "/", "/f.bin"},
	} {
		if got, err := transfer.RemotePath(tc.local, tc.remote); err != nil || got != tc.want {
			t.Errorf("RemotePath(%q, %q) = %q, %v; want %q", tc.local, tc.remote, got, err, tc.want)
		}
	}
	if _, err := transfer.RemotePath("/", "d/"); !errors.Is(err, transfer.ErrInvalidPath) {
		t.Errorf("no base name: %v", err)
	}
}

// server is a 127.0.0.1 listener that counts the connections it accepted.
func server(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return "ftp://u:pw@" + ln.Addr().String(), &n
}

// A planted partial, state file or target that is not a regular file stops
// a download before any connection, and nothing it points to is touched.
func TestDownloadRefusesPlantedFiles(t *testing.T) {
	url, accepted := server(t)
	tr, err := transfer.Open(url, transfer.Config{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	plant := map[string]func(p string) error{
		"symlinked .part":  func(p string) error { return os.Symlink(victim, p+".part") },
		"fifo .part":       func(p string) error { return syscall.Mkfifo(p+".part", 0o644) },
		"symlinked .state": func(p string) error { return os.Symlink(victim, p+".part.state") },
		"fifo target":      func(p string) error { return syscall.Mkfifo(p, 0o644) },
		"symlinked target": func(p string) error { return os.Symlink(victim, p) },
		"directory .part":  func(p string) error { return os.Mkdir(p+".part", 0o755) },
	}
	i := 0
	for name, do := range plant {
		i++
		local := filepath.Join(dir, "out"+string(rune('a'+i)))
		if err := do(local); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := tr.Download(ctx, "f.bin", local)
		cancel()
		var terr *transfer.Error
		if !errors.Is(err, transfer.ErrNotRegular) || !errors.As(err, &terr) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("victim now holds %q", b)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections", n)
	}
}

// An upload from a fifo or a device fails at once (opening a fifo would
// wait for a writer; a device never ends), before any connection.
func TestUploadRefusesNonRegularSource(t *testing.T) {
	url, accepted := server(t)
	tr, err := transfer.Open(url, transfer.Config{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{fifo, os.DevNull, t.TempDir()} {
		start := time.Now()
		_, err := tr.Upload(context.Background(), src, "f.bin")
		if !errors.Is(err, transfer.ErrNotRegular) || time.Since(start) > time.Second {
			t.Errorf("%s: %v after %v", src, err, time.Since(start))
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections", n)
	}
}
