package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
)

// An empty file moves up and down on every server of the test bed: the
// upload creates the remote file (there is no byte to create it with), the
// download creates the local one (issue 9 case 8).
func TestZeroByteEveryServer(t *testing.T) {
	env := testbed.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "empty")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tg := range integrityTargets(env) {
		t.Run(tg.name, func(t *testing.T) {
			r := newMatrixRig(t, env, tg)
			remote := "empty-" + tg.name + ".bin"
			ctx := context.Background()
			if _, err := transfer.Put(ctx, src, r.url(remote), r.cfg); err != nil {
				t.Fatalf("put: %v", err)
			}
			fi, err := os.Stat(filepath.Join(tg.srv.Root, remote))
			if err != nil || fi.Size() != 0 {
				t.Fatalf("remote file: %v %v", fi, err)
			}
			got := filepath.Join(t.TempDir(), "got")
			if _, err := transfer.Get(ctx, r.url(remote), got, r.cfg); err != nil {
				t.Fatalf("get: %v", err)
			}
			if fi, err := os.Stat(got); err != nil || fi.Size() != 0 {
				t.Fatalf("local file: %v %v", fi, err)
			}
			_ = os.Remove(filepath.Join(tg.srv.Root, remote))
		})
	}
}
