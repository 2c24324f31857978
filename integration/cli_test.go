package integration_test

// The CLI contract that scripts rely on, against the real servers: exit
// codes, one JSON object on stdout, one login attempt on a bad password,
// no retry storm on a full disk, prompt interruption.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
)

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// cliBinary builds cmd/haul once per test process.
func cliBinary(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "haul-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "haul")
		out, err := exec.Command("go", "build", "-o", cliPath, "github.com/openhaul/haul/cmd/haul").CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// cliReport is the --json object.
type cliReport struct {
	OK          bool   `json:"ok"`
	Op          string `json:"op"`
	URL         string `json:"url"`
	Bytes       int64  `json:"bytes"`
	Attempts    int    `json:"attempts"`
	Resumes     int    `json:"resumes"`
	ResentBytes int64  `json:"resent_bytes"`
	DurationMS  int64  `json:"duration_ms"`
	Verified    string `json:"verified"`
	Error       *struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"error"`
}

type cliRun struct {
	code    int
	rep     cliReport
	stdout  string
	stderr  string
	elapsed time.Duration
}

// cliSchemeFlags returns the flags a URL of scheme needs on the test bed
// (flags of another scheme are usage errors).
func cliSchemeFlags(scheme string, env *testbed.Env) []string {
	if scheme == "sftp" {
		return []string{"--known-hosts", env.KnownHostsFile}
	}
	return nil
}

// runCLI runs haul with password pw in HAUL_PASSWORD and --json.
func runCLI(t *testing.T, pw string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(t), append([]string{args[0], "--json"}, args[1:]...)...)
	cmd.Env = append(os.Environ(), "HAUL_PASSWORD="+pw)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := cliRun{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &r.rep); err != nil {
		t.Fatalf("stdout is not one JSON object (%v): %q\nstderr: %s", err, out.String(), errb.String())
	}
	if pw != "" && strings.Contains(r.stdout+r.stderr, pw) {
		t.Fatalf("the password appears in the output")
	}
	return r
}

func cliURL(scheme string, env *testbed.Env, srv testbed.Server, remote string) string {
	return fmt.Sprintf("%s://%s@%s/%s", scheme, env.User, srv.Addr(), remote)
}

// waitCount polls a server log until it holds want matching lines, bounded.
func waitCount(t *testing.T, env *testbed.Env, log, substr string, want int) int {
	t.Helper()
	var n int
	for i := 0; i < 50; i++ {
		if n = env.CountInLog(t, log, substr); n >= want {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

func TestCLIWrongPasswordOneLoginExit3(t *testing.T) {
	env := testbed.Require(t)
	t.Run("ftp", func(t *testing.T) {
		before := env.CountInLog(t, env.VsftpdPlain.Log, "FAIL LOGIN")
		r := runCLI(t, "wrong-password", "get", cliURL("ftp", env, env.VsftpdPlain, "x.bin"), filepath.Join(t.TempDir(), "x"))
		if r.code != 3 || r.rep.Error == nil || r.rep.Error.Kind != "auth" || r.rep.Attempts != 1 {
			t.Fatalf("exit %d, report %+v, stderr %s", r.code, r.rep, r.stderr)
		}
		if r.elapsed > 5*time.Second {
			t.Errorf("took %v", r.elapsed)
		}
		// Let a second attempt, if any, show up before counting.
		time.Sleep(1500 * time.Millisecond)
		if got := waitCount(t, env, env.VsftpdPlain.Log, "FAIL LOGIN", before+1) - before; got != 1 {
			t.Errorf("%d failed logins in the server log, want exactly 1", got)
		}
		t.Logf("exit 3 in %v", r.elapsed)
	})
	t.Run("sftp", func(t *testing.T) {
		before := env.CountInLog(t, env.SSHD.Log, "Failed password for "+env.User)
		r := runCLI(t, "wrong-password", "get", "--known-hosts", env.KnownHostsFile,
			cliURL("sftp", env, env.SSHD, "x.bin"), filepath.Join(t.TempDir(), "x"))
		if r.code != 3 || r.rep.Error == nil || r.rep.Error.Kind != "auth" {
			t.Fatalf("exit %d, report %+v, stderr %s", r.code, r.rep, r.stderr)
		}
		time.Sleep(500 * time.Millisecond)
		if got := waitCount(t, env, env.SSHD.Log, "Failed password for "+env.User, before+1) - before; got != 1 {
			t.Errorf("%d failed logins in the server log, want exactly 1", got)
		}
		t.Logf("exit 3 in %v", r.elapsed)
	})
}

func TestCLIMissingFileExit4NoRetry(t *testing.T) {
	env := testbed.Require(t)
	for _, c := range []struct {
		scheme string
		srv    testbed.Server
	}{{"ftp", env.VsftpdPlain}, {"sftp", env.SSHD}} {
		t.Run(c.scheme, func(t *testing.T) {
			local := filepath.Join(t.TempDir(), "x")
			r := runCLI(t, env.Password, append(append([]string{"get"}, cliSchemeFlags(c.scheme, env)...), cliURL(c.scheme, env, c.srv, "does-not-exist.bin"), local)...)
			if r.code != 4 || r.rep.Attempts != 1 || r.rep.Error.Kind != "not_found" {
				t.Fatalf("exit %d, report %+v", r.code, r.rep)
			}
			for _, p := range []string{local, local + ".part"} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was created for a missing remote", p)
				}
			}
		})
	}
}

func TestCLIDiskFullExit5KeepsPartial(t *testing.T) {
	env := testbed.Require(t)
	src, _ := testbed.RandomFile(t, t.TempDir(), env.FullSize+16<<20)
	for _, c := range []struct {
		scheme string
		srv    testbed.Server
	}{{"ftp", env.VsftpdPlain}, {"ftp", env.Pureftpd}, {"sftp", env.SSHD}} {
		if c.srv.FullDir == "" {
			continue
		}
		t.Run(c.srv.Name, func(t *testing.T) {
			name := "full-" + strings.ToLower(c.srv.Name) + ".bin"
			partial := filepath.Join(c.srv.FullLocal, name+".part")
			_ = os.Remove(partial)
			t.Cleanup(func() { os.Remove(partial) })
			remote := strings.TrimPrefix(c.srv.FullDir, c.srv.Home)
			remote = strings.TrimPrefix(remote, "/") + "/" + name
			r := runCLI(t, env.Password, append(append([]string{"put"}, cliSchemeFlags(c.scheme, env)...), src, cliURL(c.scheme, env, c.srv, remote))...)
			if r.code != 5 || r.rep.Error == nil || r.rep.Error.Kind != "no_space" {
				t.Fatalf("exit %d, report %+v, stderr %s", r.code, r.rep, r.stderr)
			}
			if r.rep.Attempts > 3 {
				t.Errorf("%d attempts: a retry storm", r.rep.Attempts)
			}
			if c.scheme == "sftp" {
				// statvfs@openssh.com: refused before a byte is sent.
				if !strings.Contains(r.rep.Error.Message, "free") {
					t.Errorf("not refused by the free-space preflight: %s", r.rep.Error.Message)
				}
				t.Logf("exit 5 after %d attempts in %v: %s", r.rep.Attempts, r.elapsed, r.rep.Error.Message)
				return
			}
			fi, err := os.Stat(partial)
			if err != nil || fi.Size() == 0 {
				t.Fatalf("partial not kept: %v", err)
			}
			t.Logf("exit 5 after %d attempts in %v, partial %d bytes: %s", r.rep.Attempts, r.elapsed, fi.Size(), r.rep.Error.Message)
		})
	}
}

func TestCLIInterruptExit130(t *testing.T) {
	env := testbed.Require(t)
	src, _ := testbed.RandomFile(t, t.TempDir(), 64<<20)
	p, err := faultproxy.NewLoopback(env.Host, append([]int{env.VsftpdPlain.Port}, faultproxy.PortRange(env.VsftpdPlain.PasvMin, env.VsftpdPlain.PasvMax)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetRate(4 << 20) // slow enough to interrupt mid-transfer
	url := fmt.Sprintf("ftp://%s@%s:%d/interrupt.bin", env.User, p.Host(), env.VsftpdPlain.Port)
	cmd := exec.Command(cliBinary(t), "put", "--json", src, url)
	cmd.Env = append(os.Environ(), "HAUL_PASSWORD="+env.Password)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once data is flowing.
	for i := 0; i < 500 && p.Stats().Upstream < 1<<20; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	elapsed := time.Since(start)
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("err %v, stdout %s", err, out.String())
	}
	if elapsed > time.Second {
		t.Errorf("took %v to stop", elapsed)
	}
	var rep cliReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Error == nil || rep.Error.Kind != "interrupted" {
		t.Fatalf("report %q", out.String())
	}
	t.Logf("exit 130 in %v", elapsed)
}

// The disk fills up while an SFTP upload runs (the preflight passed): the
// generic SSH_FX_FAILURE is told apart by statvfs, the upload ends with the
// no-space error, and the partial is kept.
func TestDiskFillsDuringSFTPUpload(t *testing.T) {
	env := testbed.Require(t)
	srv := env.SSHD
	full, fullRemote, size := privateFull(t, env, srv)
	src, _ := testbed.RandomFile(t, t.TempDir(), size*3/4)
	name := tbName(t, "fills")
	partial := filepath.Join(full, name+".part")
	filler := filepath.Join(full, tbName(t, "filler"))
	t.Cleanup(func() { os.Remove(partial); os.Remove(filler) })
	var once sync.Once
	cfg := transfer.Config{
		Password:       env.Password,
		KnownHostsFile: env.KnownHostsFile,
		InitialBackoff: 50 * time.Millisecond,
		Progress: func(done, total int64) {
			if done >= 8<<20 {
				once.Do(func() { cliFill(t, filler) })
			}
		},
	}
	url := fmt.Sprintf("sftp://%s@%s//%s", env.User, srv.Addr(), strings.TrimPrefix(fullRemote, "/")+"/"+name)
	_, err := transfer.Put(context.Background(), src, url, cfg)
	if !errors.Is(err, transfer.ErrNoSpace) {
		t.Fatalf("err = %v", err)
	}
	var te *transfer.Error
	if !errors.As(err, &te) || te.Attempts > 2 {
		t.Fatalf("err = %v", err)
	}
	fi, serr := os.Stat(partial)
	if serr != nil || fi.Size() < 4<<20 {
		t.Fatalf("partial not kept: %v", serr)
	}
	t.Logf("%v; partial %d bytes", err, fi.Size())
}

// privateFull returns a directory of srv, as a local and as a remote path,
// on a tmpfs that only the calling test uses, and its size: a tmpfs of
// env.FullSize bytes the test mounts (as root) in the server's root, so
// that no other test, in this process or in another one using the same
// test bed, fills or frees it meanwhile (a filler of another run, or its
// removal, made a full-disk test fail now and then). Without the right to
// mount, it is the server's shared full directory (FullLocal, FullDir).
func privateFull(t *testing.T, env *testbed.Env, srv testbed.Server) (local, remote string, size int64) {
	t.Helper()
	size = env.FullSize
	if size <= 0 {
		size = 32 << 20
	}
	name := fmt.Sprintf("full-%d-%d", os.Getpid(), time.Now().UnixNano())
	dir := filepath.Join(srv.Root, name)
	err := os.Mkdir(dir, 0o755)
	if err == nil {
		var st syscall.Stat_t
		if err = syscall.Stat(srv.Root, &st); err == nil { // the root belongs to the test user
			var unmount func()
			if unmount, err = mountTmpfs(dir, size, int(st.Uid), int(st.Gid)); err == nil {
				t.Cleanup(func() { unmount(); os.Remove(dir) })
				return dir, srv.RemotePath(name), size
			}
		}
		os.Remove(dir)
	}
	if srv.FullDir == "" {
		t.Fatalf("no private tmpfs (%v) and %s has no full directory", err, srv.Name)
	}
	t.Logf("no private tmpfs (%v): using the shared %s", err, srv.FullLocal)
	return srv.FullLocal, srv.FullDir, env.FullSize
}

// cliFill writes to path until the file system is full.
func cliFill(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := 0; i < 1<<10; i++ {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}
