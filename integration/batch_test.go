package integration_test

// Batches (issue 12, items 3-5) against the real servers: a tree up and
// down with 8 workers, compared byte for byte; a rerun sends nothing;
// logins stay within parallel + 1.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
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
			state := t.TempDir()
			cl := openClient(t, env, c, transfer.Config{MaxConns: parallel, StateDir: state})
			ctx := context.Background()
			var res transfer.BatchResult
			logins := countLogins(t, env, c, parallel+1, func(try int) {
				os.RemoveAll(c.srv.LocalPath(remote))
				cl.Close()
				cl = openClient(t, env, c, transfer.Config{MaxConns: parallel, StateDir: t.TempDir()})
				var err error
				res, err = cl.UploadTree(ctx, src, remote, transfer.BatchOptions{Parallel: parallel})
				if err != nil {
					t.Fatal(err)
				}
			})
			if logins > parallel+1 {
				t.Errorf("upload of %d files logged in %d times, want <= %d", res.Stats.Files, logins, parallel+1)
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
