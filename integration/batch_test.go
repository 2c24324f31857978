package integration_test

// Batches (issue 12, items 3-5) against the real servers: a tree up and
// down with 8 workers, compared byte for byte; a rerun sends nothing;
// logins stay within parallel + 1.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
)

// makeTree writes a small three-level tree of n files under a new
// directory and returns it.
func makeTree(t *testing.T, n int, seed uint64) string {
	t.Helper()
	root := t.TempDir()
	r := testbed.NewRandReader(seed)
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("d%d", i%3), fmt.Sprintf("e%d", i%2))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		size := int64(1+i*7919%200) << 10
		if i%17 == 0 {
			size = 0
		}
		buf := make([]byte, size)
		if _, err := r.Read(buf); err != nil && size > 0 {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.bin", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// treeFiles returns the regular files under root, by relative path, with
// their contents.
func treeFiles(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		b, err := os.ReadFile(p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, want, got string) {
	t.Helper()
	a, b := treeFiles(t, want), treeFiles(t, got)
	var names []string
	for k := range a {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if g, ok := b[k]; !ok {
			t.Errorf("%s missing", k)
		} else if !bytes.Equal(a[k], g) {
			t.Errorf("%s differs", k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("%s: extra file", k)
		}
	}
}

func TestBatchTreeRoundTrip(t *testing.T) {
	env := testbed.Require(t)
	for _, c := range clientCases(env) {
		t.Run(c.scheme, func(t *testing.T) {
			src := makeTree(t, 60, 12)
			remote := fmt.Sprintf("batch-%s-%d", c.scheme, os.Getpid())
			t.Cleanup(func() { os.RemoveAll(c.srv.LocalPath(remote)) })
			const parallel = 8
			// Logins are the connections to the control port, counted by
			// a proxy of this test's own: exact, whoever else uses the
			// server meanwhile.
			rig := newMatrixRig(t, env, matrixTarget{c.scheme + "-batch", c.scheme, c.srv})
			cfg := rig.cfg
			cfg.OnEvent = nil
			cfg.MaxConns = parallel
			cfg.StateDir = t.TempDir()
			cl, err := transfer.Open(rig.url(""), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx := context.Background()
			res, err := cl.UploadTree(ctx, src, remote, transfer.BatchOptions{Parallel: parallel})
			if err != nil {
				t.Fatal(err)
			}
			if logins := rig.proxy.Stats(c.srv.Port).Accepted; logins > parallel+1 {
				t.Errorf("upload of %d files logged in %d times, want <= %d", res.Stats.Files, logins, parallel+1)
			} else {
				t.Logf("upload of %d files: %d logins", res.Stats.Files, logins)
			}
			if res.Stats.Done != 60 || res.Stats.Failed != 0 {
				t.Fatalf("stats %+v", res.Stats)
			}
			sameTree(t, src, c.srv.LocalPath(remote))

			// A rerun on the complete tree sends nothing.
			again, err := cl.UploadTree(ctx, src, remote, transfer.BatchOptions{Parallel: parallel})
			if err != nil {
				t.Fatal(err)
			}
			if again.Stats.Skipped != 60 || again.Stats.Sent != 0 {
				t.Errorf("rerun: %+v, want all 60 skipped, 0 sent", again.Stats)
			}

			dst := t.TempDir()
			down, err := cl.DownloadTree(ctx, remote, dst, transfer.BatchOptions{Parallel: parallel})
			if err != nil {
				t.Fatal(err)
			}
			if down.Stats.Done != 60 {
				t.Errorf("download stats %+v", down.Stats)
			}
			sameTree(t, src, dst)
			again, err = cl.DownloadTree(ctx, remote, dst, transfer.BatchOptions{Parallel: parallel})
			if err != nil {
				t.Fatal(err)
			}
			if again.Stats.Skipped != 60 || again.Stats.Sent != 0 {
				t.Errorf("download rerun: %+v, want all 60 skipped, 0 sent", again.Stats)
			}
		})
	}
}

// TestBatchUnderConnectionLimit: 200 files at 8 workers into the vsftpd
// whose max_per_ip is 3: the Client lowers its cap at the first 421 and
// every file arrives.
func TestBatchUnderConnectionLimit(t *testing.T) {
	env := testbed.Require(t)
	c := clientCase{"ftp", env.VsftpdLimited, "OK LOGIN"}
	env.RequireServer(t, c.srv)
	src := t.TempDir()
	for i := range 200 {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%03d", i)), bytes.Repeat([]byte{byte(i)}, 1000+i*50), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	remote := fmt.Sprintf("limit-%d", os.Getpid())
	t.Cleanup(func() { os.RemoveAll(c.srv.LocalPath(remote)) })
	var logs syncBuffer
	cl := openClient(t, env, c, transfer.Config{MaxConns: 8, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	res, err := cl.UploadTree(context.Background(), src, remote, transfer.BatchOptions{Parallel: 8})
	if err != nil {
		t.Fatalf("%v (%+v)", err, res.Stats)
	}
	if !strings.Contains(logs.String(), "lowering the session cap") {
		t.Errorf("the server's limit was never hit or never adapted to; log:\n%s", logs.String())
	}
	if res.Stats.Done != 200 {
		t.Fatalf("stats %+v", res.Stats)
	}
	sameTree(t, src, c.srv.LocalPath(remote))
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a logger).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBatchDownloadRefusesHostileNames: a remote tree holding a name with
// a backslash (which another system reads as a separator) and a
// directory that the local target has as a planted symbolic link: both
// are refused as failed files, the rest arrives, and nothing is written
// outside the target.
func TestBatchDownloadRefusesHostileNames(t *testing.T) {
	env := testbed.Require(t)
	for _, c := range clientCases(env) {
		t.Run(c.scheme, func(t *testing.T) {
			remote := fmt.Sprintf("hostile-%s-%d", c.scheme, os.Getpid())
			root := c.srv.LocalPath(remote)
			t.Cleanup(func() { os.RemoveAll(root) })
			for name, body := range map[string]string{
				`..\..\evil`:   "escape",
				"ok.txt":       "fine",
				"sub/inner":    "through the link",
				"deep/a/b.txt": "deep",
			} {
				p := filepath.Join(root, filepath.FromSlash(name))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				chownTestUser(t, env, p)
				return nil
			})
			dst := t.TempDir()
			outside := t.TempDir()
			if err := os.Symlink(outside, filepath.Join(dst, "sub")); err != nil {
				t.Fatal(err)
			}
			cl := openClient(t, env, c, transfer.Config{})
			res, err := cl.DownloadTree(context.Background(), remote, dst, transfer.BatchOptions{Parallel: 2, NoJournal: true})
			var be *transfer.BatchError
			if !errors.As(err, &be) || be.Failed != 2 {
				t.Fatalf("err %v, want a BatchError with 2 failed files (%+v)", err, res.Stats)
			}
			kinds := map[string]int{}
			for _, f := range res.Files {
				if f.Err != nil {
					kinds[transfer.FailureKind(f.Err)]++
					t.Logf("refused: %v", f.Err)
				}
			}
			if kinds["invalid"] != 1 || kinds["not-regular"] != 1 {
				t.Errorf("failures by kind %v, want 1 invalid (the backslash) and 1 not-regular (the link)", kinds)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("%d file(s) written through the link", len(ents))
			}
			for name, want := range map[string]string{"ok.txt": "fine", "deep/a/b.txt": "deep"} {
				if b, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(b) != want {
					t.Errorf("%s: %q %v", name, b, err)
				}
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dst), "evil")); err == nil {
				t.Error("a file escaped the target")
			}
		})
	}
}

// TestBatchSkipChecksum: without a journal, the checksum policy skips the
// files whose server-side hash equals the source's (OpenSSH: sha256 by
// exec) and sends the one that differs.
func TestBatchSkipChecksum(t *testing.T) {
	env := testbed.Require(t)
	c := clientCase{"sftp", env.SSHD, ""}
	src := makeTree(t, 12, 5)
	remote := fmt.Sprintf("cksum-%d", os.Getpid())
	t.Cleanup(func() { os.RemoveAll(c.srv.LocalPath(remote)) })
	cl := openClient(t, env, c, transfer.Config{})
	ctx := context.Background()
	if _, err := cl.UploadTree(ctx, src, remote, transfer.BatchOptions{NoJournal: true}); err != nil {
		t.Fatal(err)
	}
	// Same size, other content.
	p := filepath.Join(src, "d1", "e1", "f001.bin")
	b, err := os.ReadFile(p)
	if err != nil || len(b) == 0 {
		t.Fatal(err, len(b))
	}
	b[0] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := cl.UploadTree(ctx, src, remote, transfer.BatchOptions{NoJournal: true, Skip: transfer.SkipChecksum})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Done != 1 || res.Stats.Skipped != 11 {
		t.Errorf("stats %+v, want 1 sent and 11 skipped", res.Stats)
	}
	for _, f := range res.Files {
		if f.Skipped {
			t.Logf("%s: %s", f.Remote, f.SkipReason)
			break
		}
	}
	sameTree(t, src, c.srv.LocalPath(remote))
}

// plainWriterAt is an io.WriterAt that cannot be read back.
type plainWriterAt struct{ b []byte }

func (w *plainWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, end-int64(len(w.b)))...)
	}
	return copy(w.b[off:], p), nil
}

// TestDownloadToPlainWriterAt: a download into an io.WriterAt that cannot
// be read back is still verified by the server's hash (OpenSSH), computed
// locally as the bytes were written.
func TestDownloadToPlainWriterAt(t *testing.T) {
	env := testbed.Require(t)
	c := clientCase{"sftp", env.SSHD, ""}
	name := fmt.Sprintf("wat-%d.bin", os.Getpid())
	src, _ := testbed.RandomFile(t, t.TempDir(), 3<<20)
	cl := openClient(t, env, c, transfer.Config{})
	if _, err := cl.Upload(context.Background(), src, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(c.srv.LocalPath(name)) })
	var w plainWriterAt
	res, err := cl.DownloadTo(context.Background(), name, &w)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	if !bytes.Equal(w.b, want) {
		t.Fatal("content differs")
	}
	if res.Verified == "size" || res.Verified == "" {
		t.Errorf("verified by %q, want a hash", res.Verified)
	}
}

// TestUploadStream: an io.Reader (a pipe) uploads and is verified by the
// server's hash on proftpd (HASH) and OpenSSH (exec), by size on vsftpd.
func TestUploadStream(t *testing.T) {
	env := testbed.Require(t)
	for _, c := range []clientCase{{"ftp", env.VsftpdPlain, ""}, {"ftp", env.Proftpd, ""}, {"sftp", env.SSHD, ""}} {
		t.Run(c.srv.Name, func(t *testing.T) {
			name := fmt.Sprintf("stream-%d.bin", os.Getpid())
			t.Cleanup(func() { os.Remove(c.srv.LocalPath(name)) })
			want := bytes.Repeat([]byte("haul stream "), 200000)
			pr, pw := io.Pipe()
			go func() { _, err := pw.Write(want); pw.CloseWithError(err) }()
			cl := openClient(t, env, c, transfer.Config{})
			res, err := cl.UploadStream(context.Background(), pr, name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(c.srv.LocalPath(name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("remote content differs (%v)", err)
			}
			t.Logf("verified by %s", res.Verified)
		})
	}
}
