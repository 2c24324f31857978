package integration_test

// What the CLI does with the local side and the URL's shape, against the
// real servers: a directory or a trailing "/" means "under the other
// side's name", "-" is stdout or stdin, and the errors that cannot be
// fixed by retrying say what to do.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/testbed"
)

// cliInputRun runs haul in dir with stdin, HAUL_PASSWORD=pw, HOME set to
// an empty directory (no ~/.netrc) and TMPDIR set to tmp.
func cliInputRun(t *testing.T, dir, tmp, pw string, stdin []byte, args ...string) (code int, stdout, stderr []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HAUL_PASSWORD="+pw, "HOME="+t.TempDir(), "TMPDIR="+tmp)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.Bytes(), errb.Bytes()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.Bytes(), errb.Bytes()
}

// remoteDir makes a directory in the server's root that the test user owns.
func remoteDir(t *testing.T, env *testbed.Env, srv testbed.Server, name string) {
	t.Helper()
	p := srv.LocalPath(name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if u, err := user.Lookup(env.User); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		_ = os.Chown(p, uid, gid)
	}
	t.Cleanup(func() { _ = os.RemoveAll(p) })
}

func sameFile(t *testing.T, path string, want [32]byte) {
	t.Helper()
	if got := testbed.SHA256File(t, path); got != want {
		t.Errorf("%s differs from the source", path)
	}
}

// TestCLIDirectoriesAndStdio: put f URL/, get URL DIR/, get URL . (which
// used to write "..part"), get URL -, put - URL against vsftpd.
func TestCLIDirectoriesAndStdio(t *testing.T) {
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	sub := fmt.Sprintf("cli-input-%d", time.Now().UnixNano())
	remoteDir(t, env, srv, sub)
	work := t.TempDir()
	tmp := t.TempDir() // TMPDIR of the runs: must be empty after each
	src, sum := testbed.RandomFile(t, work, 3<<20+17)
	name := filepath.Base(src)
	dirURL := fmt.Sprintf("ftp://%s@%s/%s/", env.User, srv.Addr(), sub)
	fileURL := dirURL + name
	noTemp := func(when string) {
		t.Helper()
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("%s: %d entries left in TMPDIR (%s)", when, len(left), left[0].Name())
		}
	}

	t.Run("put f URL/", func(t *testing.T) {
		code, out, errb := cliInputRun(t, work, tmp, env.Password, nil, "put", "--json", src, dirURL)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		var rep cliReport
		if err := json.Unmarshal(out, &rep); err != nil || !strings.HasSuffix(rep.URL, "/"+sub+"/"+name) {
			t.Errorf("report url %q (%v)", rep.URL, err)
		}
		sameFile(t, srv.LocalPath(sub+"/"+name), sum)
	})

	t.Run("get URL DIR/", func(t *testing.T) {
		dst := t.TempDir()
		code, out, errb := cliInputRun(t, work, tmp, env.Password, nil, "get", "--json", fileURL, dst+"/")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		var rep struct{ Local string }
		if err := json.Unmarshal(out, &rep); err != nil || rep.Local != filepath.Join(dst, name) {
			t.Errorf("report local %q (%v)", rep.Local, err)
		}
		sameFile(t, filepath.Join(dst, name), sum)
		if left, _ := filepath.Glob(filepath.Join(dst, "*.part*")); len(left) != 0 {
			t.Errorf("left behind: %v", left)
		}
	})

	t.Run("get URL .", func(t *testing.T) {
		dst := t.TempDir()
		if code, _, errb := cliInputRun(t, dst, tmp, env.Password, nil, "get", "-q", fileURL, "."); code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		sameFile(t, filepath.Join(dst, name), sum)
		if entries, _ := os.ReadDir(dst); len(entries) != 1 {
			t.Errorf("%d entries in the directory, want the file alone", len(entries))
		}
	})

	t.Run("get URL -", func(t *testing.T) {
		code, out, errb := cliInputRun(t, work, tmp, env.Password, nil, "get", fileURL, "-")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		if sha256.Sum256(out) != sum {
			t.Errorf("stdout: %d bytes that differ from the source", len(out))
		}
		noTemp("get -")
	})

	t.Run("put - URL", func(t *testing.T) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		code, _, errb := cliInputRun(t, work, tmp, env.Password, data, "put", "-", fileURL+".stdin")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		sameFile(t, srv.LocalPath(sub+"/"+name+".stdin"), sum)
		noTemp("put -")
	})

	t.Run("get URL /dev/null is refused", func(t *testing.T) {
		code, _, errb := cliInputRun(t, work, tmp, env.Password, nil, "get", fileURL, os.DevNull)
		if code != 2 || !strings.Contains(string(errb), "haul get URL - >/dev/null") {
			t.Errorf("exit %d: %s", code, errb)
		}
		if fi, err := os.Lstat(os.DevNull); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Fatalf("%s is no longer a device: %v", os.DevNull, err)
		}
		if _, err := os.Lstat(os.DevNull + ".part"); err == nil {
			t.Errorf("%s.part was created", os.DevNull)
		}
	})
}

// TestCLIServerIdentityHints: a certificate from an unknown CA names
// --ca-file; an unknown SSH host key and a missing known_hosts file name
// ssh-keyscan and --known-hosts. Exit 3 each, no login attempted.
func TestCLIServerIdentityHints(t *testing.T) {
	env := testbed.Require(t)
	work, tmp := t.TempDir(), t.TempDir()
	local := filepath.Join(work, "x")
	empty := filepath.Join(work, "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		hint string
	}{
		{"ftps without the CA", []string{"get", fmt.Sprintf("ftps://%s@%s/x", env.User, env.VsftpdFTPS.Addr()), local}, "--ca-file FILE"},
		{"unknown host key", []string{"get", "--known-hosts", empty, fmt.Sprintf("sftp://%s@%s/x", env.User, env.SSHD.Addr()), local},
			fmt.Sprintf("`ssh-keyscan -p %d %s >> %s`", env.SSHD.Port, env.SSHD.Host, empty)},
		{"no known_hosts file", []string{"get", "--known-hosts", filepath.Join(work, "none"), fmt.Sprintf("sftp://%s@%s/x", env.User, env.SSHD.Addr()), local},
			"there is no known_hosts file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			code, _, errb := cliInputRun(t, work, tmp, env.Password, nil, c.args...)
			if code != 3 || !strings.Contains(string(errb), "hint: ") || !strings.Contains(string(errb), c.hint) {
				t.Errorf("exit %d: %s", code, errb)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v: a server identity failure is not retried", d)
			}
		})
	}
}
