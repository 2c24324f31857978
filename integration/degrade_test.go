package integration_test

// Servers that lack a feature the engine would like to use (issue 11): haul
// must degrade to what the server can do and still finish byte-identical.
// Two real servers of the test bed show such behaviour:
//
//   - RCLONE_SFTP, `rclone serve sftp --vfs-cache-mode off`: WRITEs are
//     taken only in offset order (one ahead of the file's end waits up to
//     1 s for the gap to fill, then fails with SSH_FX_FAILURE "Illegal
//     seek"), and every open for writing replaces the file with what that
//     handle writes from offset 0, so an upload cannot resume: after a
//     fault it must restart from zero. Reads work at any offset: downloads
//     resume.
//   - PYFTPD_NOREST, pyftpdlib answering REST with "502 Command 'REST' not
//     implemented": neither direction can resume, both restart from zero.
//
// TestBedRcloneSFTP and TestBedPyftpdNoRest prove that the servers behave
// so (with the raw client libraries, not haul), so that TestDegradeFault
// cannot pass because a server quietly learnt the feature.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
)

const (
	degradeSize = 16 << 20
	// degradeFaultAt is where the Reset fires, in bytes of the data
	// direction: mid-transfer.
	degradeFaultAt = 8 << 20
)

// degradeCase is one server and direction, and what the result must report
// after one fault: a restart from zero where the server cannot resume, a
// resume where it can.
type degradeCase struct {
	tg   matrixTarget
	op   string // "upload" or "download"
	want string // "restart" or "resume"
}

func degradeCases(env *testbed.Env) []degradeCase {
	rclone := matrixTarget{"sftp-rclone", "sftp", env.RcloneSFTP}
	norest := matrixTarget{"ftp-pyftpd-norest", "ftp", env.PyftpdNoRest}
	return []degradeCase{
		{rclone, "upload", "restart"},
		{rclone, "download", "resume"},
		{norest, "upload", "restart"},
		{norest, "download", "restart"},
	}
}

// TestDegradeFault moves 16 MiB up and down through a fault proxy that
// resets the connection carrying the data once, mid-transfer, on each
// server with a missing feature. The result must be byte-identical, report
// a restart (the server cannot resume) or a resume (it can), and leave no
// partial file behind.
func TestDegradeFault(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), degradeSize)
	for _, c := range degradeCases(env) {
		t.Run(c.tg.name+"/"+c.op, func(t *testing.T) {
			env.RequireServer(t, c.tg.srv)
			r := newMatrixRig(t, env, c.tg)
			// A fresh name per run: a server that delays a rename until a
			// stale handle closes (rclone) must not land an earlier run's
			// file under this one.
			remote := fmt.Sprintf("degrade-%s-%s-%d.bin", c.tg.name, c.op, time.Now().UnixNano())
			remoteLocal := c.tg.srv.LocalPath(remote)
			t.Cleanup(func() {
				_ = os.Remove(remoteLocal)
				_ = os.Remove(remoteLocal + transfer.DefaultPartSuffix)
			})

			var mu sync.Mutex
			var restarts []string
			onEvent := r.cfg.OnEvent
			r.cfg.OnEvent = func(e transfer.Event) {
				switch e.Kind {
				case transfer.EventRestart:
					mu.Lock()
					restarts = append(restarts, e.Reason)
					mu.Unlock()
					t.Logf("restart (attempt %d): %s", e.Attempt, e.Reason)
				case transfer.EventFailed:
					t.Logf("attempt %d failed after %d bytes: %v", e.Attempt, e.Bytes, e.Err)
				case transfer.EventAttempt:
					if e.Attempt > 1 {
						t.Logf("attempt %d at offset %d", e.Attempt, e.Offset)
					}
				}
				onEvent(e)
			}
			armed := r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: matrixDir(c.op),
				Ports: r.data, After: degradeFaultAt})

			start := time.Now()
			res, local, err := r.transfer(t, c.op, remote, src)
			took := time.Since(start)
			fired := armed.Count()
			if err != nil {
				t.Fatalf("%s failed after %v (fault fired %d times): %v (failures: %v)",
					c.op, took.Round(time.Millisecond), fired, err, r.failures())
			}
			mu.Lock()
			t.Logf("%s ok in %v: attempts=%d resumes=%d restarts=%d resent=%d verified=%s restart reasons=%q",
				c.op, took.Round(time.Millisecond), res.Attempts, res.Resumes, res.Restarts,
				res.ResentBytes, res.Verified, restarts)
			mu.Unlock()
			if fired != 1 {
				t.Errorf("the reset fired %d times, want 1", fired)
			}
			// ok must mean the file is there, whole, now: a server may
			// report a rename done that it carries out later (rclone
			// delays one while another handle has the file open).
			fi, err := os.Stat(local)
			if err != nil {
				t.Fatalf("%s reported ok, but the result is missing: %v", c.op, err)
			}
			if fi.Size() != degradeSize {
				t.Fatalf("%s reported ok, but the result has %d bytes, want %d", c.op, fi.Size(), degradeSize)
			}
			if got := testbed.SHA256File(t, local); got != sum {
				t.Fatalf("%s reported ok, but the result's SHA-256 differs", c.op)
			}
			switch c.want {
			case "restart":
				if res.Restarts < 1 {
					t.Errorf("no restart from zero reported: %+v (failures %v)", res, r.failures())
				}
			case "resume":
				if res.Resumes < 1 {
					t.Errorf("no resume reported: %+v (failures %v)", res, r.failures())
				}
			}
			for _, p := range []string{remoteLocal + transfer.DefaultPartSuffix, r.local + transfer.DefaultPartSuffix} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("partial file left behind: %s (%v)", p, err)
				}
			}
		})
	}
}

// TestBedRcloneSFTP checks the RCLONE_SFTP server: password and key login
// into "/", an in-order (pkg/sftp's pipelined) upload and a download, a
// WRITE ahead of the file's end refused with SSH_FX_FAILURE "Illegal seek"
// after rclone's 1 s wait for the gap, an open for writing without O_TRUNC
// that still replaces the file, and a RENAME that waits for another
// session's write handle.
func TestBedRcloneSFTP(t *testing.T) {
	env := testbed.Require(t)
	srv := env.RcloneSFTP
	env.RequireServer(t, srv)
	t.Run("roundtrip-key", func(t *testing.T) { tbSFTPRoundTrip(t, env, srv, true) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _ := tbDialSFTP(ctx, t, env, srv, false) // password
	if wd, err := c.Getwd(); err != nil || wd != srv.Home {
		t.Errorf("working directory %q (%v), env says %q", wd, err, srv.Home)
	}
	name := tbName(t, "rclone-order")
	t.Cleanup(func() { _ = os.Remove(srv.LocalPath(name)) })
	block := make([]byte, 32<<10)
	for i := range block {
		block[i] = byte(i)
	}

	t.Run("write-ahead-refused", func(t *testing.T) {
		f, err := c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		_, err = f.WriteAt(block, int64(len(block)))
		took := time.Since(start)
		t.Logf("WRITE at %d of an empty file: %v after %v", len(block), err, took.Round(time.Millisecond))
		var se *sftp.StatusError
		if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxFailure || !strings.Contains(err.Error(), "Illegal seek") {
			t.Fatalf("WRITE ahead of the end: %v; want SSH_FX_FAILURE \"Illegal seek\"", err)
		}
		if took < 500*time.Millisecond {
			t.Errorf("refused after %v: rclone waits --vfs-write-wait (1 s) for the gap first", took)
		}
		// The handle still takes the write at its end.
		if _, err := f.WriteAt(block, 0); err != nil {
			t.Fatalf("WRITE at 0 after the refusal: %v", err)
		}
	})

	t.Run("open-replaces", func(t *testing.T) {
		f, err := c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < 4*int64(len(block)); off += int64(len(block)) {
			if _, err := f.WriteAt(block, off); err != nil {
				t.Fatalf("in-order WRITE at %d: %v", off, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		local := srv.LocalPath(name)
		if fi, err := os.Stat(local); err != nil || fi.Size() != 4*int64(len(block)) {
			t.Fatalf("after 4 in-order WRITEs: %v %v", fi, err)
		}
		// Resume-style: open without O_TRUNC, write 1000 bytes at 0.
		f, err = c.OpenFile(name, os.O_WRONLY)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(block[:1000], 0); err != nil {
			t.Fatalf("WRITE at 0: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(local)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("file of %d bytes opened without O_TRUNC, 1000 bytes written at 0: now %d bytes",
			4*len(block), fi.Size())
		if fi.Size() != 1000 {
			t.Errorf("size %d: rclone (cache mode off) should have replaced the file", fi.Size())
		}
	})

	// A rename of a file that another session still has open for writing
	// is answered OK but carried out when that handle closes, with that
	// handle's content: a writer that lost its session leaves such a
	// handle behind until the server notices.
	t.Run("rename-waits-for-open-handle", func(t *testing.T) {
		stale, _ := tbDialSFTP(ctx, t, env, srv, true)
		part, final := name+".part", name+".final"
		t.Cleanup(func() {
			_ = os.Remove(srv.LocalPath(part))
			_ = os.Remove(srv.LocalPath(final))
		})
		fs, err := stale.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fs.WriteAt(block, 0); err != nil {
			t.Fatal(err)
		}
		f, err := c.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < 2*int64(len(block)); off += int64(len(block)) {
			if _, err := f.WriteAt(block, off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Rename(part, final); err != nil {
			t.Fatalf("rename: %v", err)
		}
		fi, err := c.Stat(final)
		_, lerr := os.Stat(srv.LocalPath(final))
		t.Logf("after RENAME (OK): SFTP stat of the target %v %v; on disk: %v", sizeOf(fi), err, lerr)
		if err := fs.Close(); err != nil {
			t.Fatal(err)
		}
		lfi, err := os.Stat(srv.LocalPath(final))
		if err != nil {
			t.Fatalf("target after the stale handle closed: %v", err)
		}
		t.Logf("after the stale handle closed: target on disk has %d bytes (the new upload wrote %d, the stale handle %d)",
			lfi.Size(), 2*len(block), len(block))
		if !errors.Is(lerr, os.ErrNotExist) {
			t.Errorf("the rename was carried out at once (%v): rclone no longer delays it", lerr)
		}
	})
}

func sizeOf(fi os.FileInfo) any {
	if fi == nil {
		return nil
	}
	return fi.Size()
}

// TestBedPyftpdNoRest checks the PYFTPD_NOREST server: STOR and RETR work
// (jlaffaye/ftp, EPSV), REST is answered 502 and FEAT does not offer it.
func TestBedPyftpdNoRest(t *testing.T) {
	env := testbed.Require(t)
	srv := env.PyftpdNoRest
	env.RequireServer(t, srv)
	t.Run("roundtrip", func(t *testing.T) { tbFTPRoundTrip(t, env, srv, nil) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, code, greeting, err := tbDialRaw(ctx, t, srv)
	if err != nil || code != 220 {
		t.Fatalf("greeting %d %q: %v", code, greeting, err)
	}
	r.login(t, env)
	_, feat := r.cmd(t, 211, "FEAT")
	if strings.Contains(feat, "REST") {
		t.Errorf("FEAT offers REST:\n%s", feat)
	}
	for _, off := range []int64{0, 1 << 20} {
		code, msg := r.cmd(t, 5, "REST %d", off)
		t.Logf("REST %d: %d %s", off, code, msg)
		if code != 502 || msg != "Command 'REST' not implemented" {
			t.Errorf("REST %d: %d %q; want 502 \"Command 'REST' not implemented\"", off, code, msg)
		}
	}
	// The session lives on.
	r.cmd(t, 257, "PWD")
}
