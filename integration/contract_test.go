package integration_test

// Engine-level contracts against the real servers: binary mode on every
// reconnection, prompt cancellation without leaks, refused reconnections.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
)

// Every FTP session haul opens, the first and every reconnection, sends
// TYPE I before its RETR or STOR: read from the control stream itself.
func TestTypeIOnEveryReconnection(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), 24<<20)
	tg := matrixTarget{"ftp-vsftpd", "ftp", env.VsftpdPlain}
	for _, op := range []string{"upload", "download"} {
		t.Run(op, func(t *testing.T) {
			r := newMatrixRig(t, env, tg)
			tap := r.proxy.Tap(tg.srv.Port, faultproxy.Upstream)
			r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: matrixDir(op), Ports: r.data, After: 6 << 20, Repeat: 1})
			res, local, err := r.transfer(t, op, "typei-"+op+".bin", src)
			if err != nil {
				t.Fatal(err)
			}
			if testbed.SHA256File(t, local) != sum || res.Attempts < 3 {
				t.Fatalf("res %+v", res)
			}
			sessions, transfers := 0, 0
			binary := false
			for _, line := range strings.Split(tap.String(), "\r\n") {
				verb, _, _ := strings.Cut(line, " ")
				switch strings.ToUpper(verb) {
				case "USER":
					sessions++
					binary = false
				case "TYPE":
					binary = strings.EqualFold(strings.TrimSpace(line), "TYPE I")
				case "RETR", "STOR", "APPE":
					transfers++
					if !binary {
						t.Errorf("%s without TYPE I before it on session %d", verb, sessions)
					}
				}
			}
			// A session whose control connection survived a data fault
			// carries the next attempt: fewer logins than attempts is fine,
			// as long as every transfer on every session is binary.
			if sessions < 1 || transfers < 3 {
				t.Fatalf("saw %d sessions and %d transfers for %d attempts", sessions, transfers, res.Attempts)
			}
			t.Logf("%d sessions, %d transfers, each after TYPE I", sessions, transfers)
		})
	}
}

// Cancelling the context mid-transfer returns within a second and leaves
// no goroutine behind, on every protocol.
func TestCancelReturnsPromptlyWithoutLeaks(t *testing.T) {
	env := testbed.Require(t)
	src, _ := testbed.RandomFile(t, t.TempDir(), 64<<20)
	for _, tg := range []matrixTarget{{"ftp-vsftpd", "ftp", env.VsftpdPlain}, {"ftps-vsftpd", "ftps", env.VsftpdFTPS}, {"sftp-openssh", "sftp", env.SSHD}} {
		for _, op := range []string{"upload", "download"} {
			t.Run(tg.name+"/"+op, func(t *testing.T) {
				r := newMatrixRig(t, env, tg)
				r.proxy.SetRate(8 << 20) // slow enough to be mid-transfer
				remote := "cancel-" + tg.name + "-" + op + ".bin"
				if op == "download" {
					matrixStage(t, tg.srv, remote, src)
				}
				before := runtime.NumGoroutine()
				ctx, cancel := context.WithCancel(context.Background())
				var cancelled time.Time
				r.cfg.Progress = func(done, total int64) {
					if done >= 2<<20 && cancelled.IsZero() {
						cancelled = time.Now()
						cancel()
					}
				}
				var err error
				if op == "upload" {
					_, err = transfer.Put(ctx, src, r.url(remote), r.cfg)
				} else {
					_, err = transfer.Get(ctx, r.url(remote), filepath.Join(t.TempDir(), "x"), r.cfg)
				}
				took := time.Since(cancelled)
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("err = %v", err)
				}
				if took > time.Second {
					t.Errorf("returned %v after the cancel", took)
				}
				r.proxy.Close() // the proxy's own goroutines are not haul's
				var n int
				for i := 0; i < 100; i++ {
					if n = runtime.NumGoroutine(); n <= before {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if n > before {
					buf := make([]byte, 1<<16)
					t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
				}
				t.Logf("returned %v after the cancel", took)
			})
		}
	}
}

// Reconnections that the server (or the network) refuses are retried until
// one gets through: vsftpd's 421 for FTP (TestResume421OnReconnect), and
// for FTPS and SFTP connections closed before the greeting.
func TestRefusedReconnections(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), 32<<20)
	for _, tg := range []matrixTarget{{"ftps-vsftpd", "ftps", env.VsftpdFTPS}, {"sftp-openssh", "sftp", env.SSHD}} {
		for _, op := range []string{"upload", "download"} {
			t.Run(tg.name+"/"+op, func(t *testing.T) {
				r := newMatrixRig(t, env, tg)
				r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: matrixDir(op), Ports: r.data, After: 8 << 20})
				var refusal *faultproxy.Armed
				onEvent := r.cfg.OnEvent
				r.cfg.OnEvent = func(e transfer.Event) {
					onEvent(e)
					if e.Kind == transfer.EventFailed && refusal == nil {
						// After the first failure, close the next two
						// connections before the server's greeting.
						refusal = r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Close, Dir: faultproxy.Downstream, Ports: []int{tg.srv.Port}, After: 0, Repeat: 1})
					}
				}
				res, local, err := r.transfer(t, op, fmt.Sprintf("refused-%s-%s.bin", tg.name, op), src)
				if err != nil {
					t.Fatal(err)
				}
				if testbed.SHA256File(t, local) != sum || res.Attempts < 3 || refusal == nil || refusal.Count() < 1 {
					t.Fatalf("res %+v failures %v", res, r.failures())
				}
				t.Logf("attempts=%d resumes=%d refused=%d failures=%v", res.Attempts, res.Resumes, refusal.Count(), r.failures())
			})
		}
	}
}
