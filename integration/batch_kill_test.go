package integration_test

// kill -9 in the middle of a batch, then a rerun (issue 12, item 5): the
// rerun sends no file the first run verified, resumes the partial ones,
// and the trees end byte-identical. The first run is this test binary run
// again as a child process (TestBatchKillChild), killed by the parent once
// half the bytes are at the destination: the child's progress callback
// says so and then blocks, so the kill always lands mid-batch.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/resume"
	"github.com/openhaul/haul/transfer"
)

// batchChild is what the parent tells the child to do.
type batchChild struct {
	URL, Password, KnownHosts, StateDir string
	Op, Local, Remote                   string
	Half                                int64
}

const batchChildEnv = "HAUL_TEST_BATCH_CHILD"

// TestBatchKillChild is the child: it runs when the parent sets
// HAUL_TEST_BATCH_CHILD, and skips otherwise.
func TestBatchKillChild(t *testing.T) {
	spec := os.Getenv(batchChildEnv)
	if spec == "" {
		t.Skip("the child of TestBatchKillAndRerun; runs only under it")
	}
	var c batchChild
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		t.Fatal(err)
	}
	cl, err := transfer.Open(c.URL, transfer.Config{Password: c.Password, KnownHostsFile: c.KnownHosts, StateDir: c.StateDir, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done := map[string]int64{}
	var sum int64
	o := transfer.BatchOptions{
		Parallel: 4,
		Progress: func(p string, n, total int64) {
			mu.Lock()
			sum += n - done[p]
			done[p] = n
			half := sum >= c.Half
			mu.Unlock()
			if half {
				fmt.Println("HALF")
				select {} // wait for the kill
			}
		},
		OnFile: func(r transfer.FileResult) {
			if r.Err == nil && !r.Skipped {
				fmt.Println("VERIFIED " + r.Remote)
			}
		},
	}
	if c.Op == "upload" {
		_, err = cl.UploadTree(context.Background(), c.Local, c.Remote, o)
	} else {
		_, err = cl.DownloadTree(context.Background(), c.Remote, c.Local, o)
	}
	fmt.Println("FINISHED", err)
}

func TestBatchKillAndRerun(t *testing.T) {
	env := testbed.Require(t)
	for _, c := range clientCases(env) {
		for _, op := range []string{"upload", "download"} {
			t.Run(c.scheme+"/"+op, func(t *testing.T) {
				src := makeTree(t, 30, 99)
				// Larger files, so that the kill finds several in flight.
				for i := range 4 {
					testbed.RandomFile(t, filepath.Join(src, "d0"), int64(6+i)<<20)
				}
				var total int64
				for _, b := range treeFiles(t, src) {
					total += int64(len(b))
				}
				remote := fmt.Sprintf("kill-%s-%s-%d", c.scheme, op, os.Getpid())
				t.Cleanup(func() { os.RemoveAll(c.srv.LocalPath(remote)) })
				state := t.TempDir()
				local, from := src, src
				if op == "download" {
					// Put the tree on the server first, then fetch it.
					setup := openClient(t, env, c, transfer.Config{MaxConns: 4})
					if _, err := setup.UploadTree(context.Background(), src, remote, transfer.BatchOptions{NoJournal: true}); err != nil {
						t.Fatal(err)
					}
					local = t.TempDir()
				}
				spec := batchChild{URL: cliURL(c.scheme, env, c.srv, ""), Password: env.Password, StateDir: state,
					Op: op, Local: local, Remote: remote, Half: total / 2}
				if c.scheme == "sftp" {
					spec.KnownHosts = env.KnownHostsFile
				}
				verified := runBatchChild(t, spec)
				t.Logf("killed at half of %d bytes with %d file(s) verified", total, len(verified))

				cl := openClient(t, env, c, transfer.Config{MaxConns: 4, StateDir: state})
				var res transfer.BatchResult
				var err error
				if op == "upload" {
					res, err = cl.UploadTree(context.Background(), src, remote, transfer.BatchOptions{Parallel: 4})
				} else {
					res, err = cl.DownloadTree(context.Background(), remote, local, transfer.BatchOptions{Parallel: 4})
				}
				if err != nil {
					t.Fatal(err)
				}
				resumed := 0
				for _, f := range res.Files {
					if verified[f.Remote] && !f.Skipped {
						t.Errorf("%s was verified before the kill and sent again (%d bytes)", f.Remote, f.Transferred)
					}
					if f.StartOffset > 0 {
						resumed++
					}
				}
				t.Logf("rerun: %+v, %d file(s) resumed", res.Stats, resumed)
				if res.Stats.Skipped < len(verified) {
					t.Errorf("rerun skipped %d, want at least the %d verified", res.Stats.Skipped, len(verified))
				}
				if resumed == 0 {
					t.Errorf("no partial file was resumed")
				}
				if op == "upload" {
					sameTree(t, from, c.srv.LocalPath(remote))
				} else {
					sameTree(t, from, local)
				}
			})
		}
	}
}

// runBatchChild runs the child until it reports half the bytes, kills
// it with SIGKILL, and returns the files it reported verified.
func runBatchChild(t *testing.T, spec batchChild) map[string]bool {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBatchKillChild$", "-test.v")
	cmd.Env = append(os.Environ(), batchChildEnv+"="+string(b))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	verified := map[string]bool{}
	sc := bufio.NewScanner(out)
	half := false
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "VERIFIED "); ok {
			verified[name] = true
		}
		if line == "HALF" {
			half = true
			break
		}
		if strings.HasPrefix(line, "FINISHED") {
			break
		}
	}
	if half {
		// Kill once a partial's state records progress (its checkpoint
		// runs on a timer of its own): an event the test observes, so
		// that the rerun has a partial to resume however fast the link.
		waitStateProgress(t, spec)
	}
	_ = cmd.Process.Kill()
	go func() { _, _ = bufio.NewReader(out).WriteTo(discard{}) }()
	_ = cmd.Wait()
	if !half {
		t.Fatal("the child finished or failed before half the bytes")
	}
	return verified
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// waitStateProgress waits (at most 20 s) until a state file of the child's
// transfers records bytes that a rerun may keep: an upload's in StateDir,
// a download's beside its partial.
func waitStateProgress(t *testing.T, spec batchChild) {
	t.Helper()
	dir := spec.StateDir
	if spec.Op == "download" {
		dir = spec.Local
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		found := false
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || found || d.IsDir() || !(strings.HasSuffix(p, ".part.state") || strings.HasPrefix(d.Name(), "upload-") && strings.HasSuffix(p, ".json")) {
				return nil
			}
			b, err := resume.ReadRecord(p, 1<<20)
			if err != nil {
				return nil
			}
			var st struct {
				Segments []struct {
					Done, Written int64
					Streaming     bool
				}
			}
			if json.Unmarshal(b, &st) == nil {
				for _, g := range st.Segments {
					if g.Done > 0 || g.Written > 0 || g.Streaming {
						found = true
					}
				}
			}
			return nil
		})
		if found {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Log("no state file recorded progress before the kill")
}
