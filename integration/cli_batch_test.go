package integration_test

// The batch CLI against the real servers: `haul put -r --parallel 8` of a
// tree, `haul get -r` of it back, compared byte for byte; the JSON lines;
// a rerun that sends nothing.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/testbed"
)

// batchLine is one JSON line of a batch: a file's or the summary.
type batchLine struct {
	Type       string `json:"type"`
	OK         bool   `json:"ok"`
	URL        string `json:"url"`
	Local      string `json:"local"`
	Bytes      int64  `json:"bytes"`
	Skipped    bool   `json:"skipped"`
	Verified   string `json:"verified"`
	Files      int    `json:"files"`
	Done       int    `json:"files_done"`
	Failed     int    `json:"files_failed"`
	SentBytes  int64  `json:"sent_bytes"`
	ExitCode   int    `json:"exit_code"`
	DurationMS int64  `json:"duration_ms"`
}

// runBatchCLI runs haul with --json and returns the exit code, the file
// lines and the summary.
func runBatchCLI(t *testing.T, env *testbed.Env, cache string, args ...string) (int, []batchLine, batchLine, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(t), append([]string{args[0], "--json"}, args[1:]...)...)
	cmd.Env = append(os.Environ(), "HAUL_PASSWORD="+env.Password, "XDG_CACHE_HOME="+cache)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var files []batchLine
	var sum batchLine
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var l batchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("a stdout line is not JSON (%v): %q", err, sc.Text())
		}
		switch l.Type {
		case "file":
			files = append(files, l)
		case "summary":
			sum = l
		default:
			t.Fatalf("a line of type %q: %s", l.Type, sc.Text())
		}
	}
	if sum.Type != "summary" {
		t.Fatalf("no summary line; stdout %q stderr %s", out.String(), errb.String())
	}
	return code, files, sum, errb.String()
}

func TestCLIBatchTreeRoundTrip(t *testing.T) {
	env := testbed.Require(t)
	const n = 60
	src := makeTree(t, n, 7) // batch_test.go's: three levels, 0 to 200 KiB
	name := filepath.Base(src)
	for _, tc := range []struct {
		scheme string
		srv    testbed.Server
		flags  []string
	}{
		{"ftp", env.VsftpdPlain, nil},
		{"sftp", env.SSHD, []string{"--known-hosts", env.KnownHostsFile}},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			sub := fmt.Sprintf("cli-batch-%d", time.Now().UnixNano())
			remoteDir(t, env, tc.srv, sub)
			dirURL := cliURL(tc.scheme, env, tc.srv, tc.srv.RemotePath(sub)) + "/"
			if tc.scheme == "ftp" {
				dirURL = cliURL(tc.scheme, env, tc.srv, sub) + "/"
			}
			cache := t.TempDir()
			put := append(append([]string{"put", "-r", "--parallel", "8"}, tc.flags...), src, dirURL)
			code, files, sum, stderr := runBatchCLI(t, env, cache, put...)
			if code != 0 || !sum.OK || sum.Files != n || sum.Done != n || sum.Failed != 0 || len(files) != n {
				t.Fatalf("put: exit %d, summary %+v, %d file lines; stderr:\n%s", code, sum, len(files), stderr)
			}
			for _, f := range files {
				if !f.OK || f.Verified == "" || !strings.HasPrefix(f.URL, dirURL+name+"/") {
					t.Errorf("put: file line %+v", f)
				}
			}
			sameTree(t, src, tc.srv.LocalPath(sub+"/"+name))

			dst := t.TempDir()
			get := append(append([]string{"get", "-r", "--parallel", "8"}, tc.flags...), dirURL+name, dst+"/")
			code, files, sum, stderr = runBatchCLI(t, env, cache, get...)
			if code != 0 || !sum.OK || sum.Files != n || sum.Done != n || len(files) != n {
				t.Fatalf("get: exit %d, summary %+v, %d file lines; stderr:\n%s", code, sum, len(files), stderr)
			}
			sameTree(t, src, filepath.Join(dst, name))

			// A rerun finds every file verified by the journal: nothing sent.
			code, _, sum, stderr = runBatchCLI(t, env, cache, put...)
			if code != 0 || sum.Done != 0 || sum.SentBytes != 0 || sum.Files != n {
				t.Errorf("rerun: exit %d, summary %+v; stderr:\n%s", code, sum, stderr)
			}
		})
	}
}

// A batch in which some files fail exits with the worst code and says so
// in the summary; the others arrive.
func TestCLIBatchExitCodeOfWorstFile(t *testing.T) {
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	sub := fmt.Sprintf("cli-batch-fail-%d", time.Now().UnixNano())
	remoteDir(t, env, srv, sub)
	src := filepath.Join(t.TempDir(), "one.bin")
	if err := os.WriteFile(src, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirURL := cliURL("ftp", env, srv, sub) + "/"
	if r := runCLI(t, env.Password, "put", src, dirURL); r.code != 0 {
		t.Fatalf("put: exit %d %s", r.code, r.stderr)
	}
	dst := t.TempDir()
	code, files, sum, stderr := runBatchCLI(t, env, t.TempDir(), "get", dirURL+"one.bin", dirURL+"missing.bin", dst+"/")
	if code != 4 || sum.ExitCode != 4 || sum.Done != 1 || sum.Failed != 1 || len(files) != 2 {
		t.Fatalf("exit %d, summary %+v, %d lines; stderr:\n%s", code, sum, len(files), stderr)
	}
	if !strings.Contains(stderr, "FAILED") || !strings.Contains(stderr, "missing.bin") {
		t.Errorf("stderr does not name the failed file:\n%s", stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "one.bin")); err != nil || string(b) != "one" {
		t.Errorf("one.bin: %q %v", b, err)
	}
}
