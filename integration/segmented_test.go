package integration_test

// Segmented transfers (issue 5) against the real servers: one file over
// four connections, each range resuming on its own after faults, the file
// verified as a whole.

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
)

func TestSegmentedTransfersSurviveFaults(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), 64<<20)
	cases := []struct {
		tg   matrixTarget
		op   string
		kind faultproxy.Kind // Reset unless set
	}{
		{matrixTarget{"ftp-vsftpd", "ftp", env.VsftpdPlain}, "download", 0},
		{matrixTarget{"ftps-vsftpd", "ftps", env.VsftpdFTPS}, "download", 0},
		{matrixTarget{"ftp-proftpd", "ftp", env.Proftpd}, "download", 0},
		{matrixTarget{"sftp-openssh", "sftp", env.SSHD}, "download", 0},
		{matrixTarget{"sftp-openssh", "sftp", env.SSHD}, "upload", 0},
		{matrixTarget{"sftp-proftpd", "sftp", env.ProftpdSFTP}, "upload", 0},
		{matrixTarget{"ftp-vsftpd-nolock", "ftp", env.VsftpdNoLock}, "upload", 0},
		// A FIN from the middle of the path: vsftpd answers 226 for a
		// range whose tail never arrived.
		{matrixTarget{"ftp-vsftpd-nolock-fin", "ftp", env.VsftpdNoLock}, "upload", faultproxy.Close},
	}
	for _, c := range cases {
		t.Run(c.tg.name+"/"+c.op, func(t *testing.T) {
			r := newMatrixRig(t, env, c.tg)
			r.cfg.Segments = 4
			r.cfg.MinSegmentSize = 4 << 20
			r.cfg.StateDir = t.TempDir()
			// A reset every 10 MiB of file data, three times, whichever
			// ranges carry it.
			kind := c.kind
			if kind == 0 {
				kind = faultproxy.Reset
			}
			r.proxy.Inject(faultproxy.Fault{Kind: kind, Dir: matrixDir(c.op), Ports: r.data, After: 10 << 20, Repeat: 2})
			remote := fmt.Sprintf("segmented-%s-%s.bin", c.tg.name, c.op)
			res, local, err := r.transfer(t, c.op, remote, src)
			if err != nil {
				t.Fatalf("%v (failures %v)", err, r.failures())
			}
			if testbed.SHA256File(t, local) != sum {
				t.Fatal("SHA-256 differs")
			}
			// Four ranges and up to three faults (a fault may land on a
			// range's data connection after that range had all it needed).
			if res.Segments != 4 || res.Attempts < 2 {
				t.Errorf("not segmented, or the faults missed: %+v (failures %v)", res, r.failures())
			}
			if c.op == "download" {
				if _, err := os.Stat(r.local + ".part.state"); !os.IsNotExist(err) {
					t.Error("the state file was left behind")
				}
			}
			t.Logf("attempts=%d resumes=%d resent=%d verified=%s duration=%v", res.Attempts, res.Resumes, res.ResentBytes, res.Verified, res.Duration)
		})
	}
}

// TestSegmentedFTPUploadFallsBack asks for four connections from FTP
// servers that cannot take one file over several: vsftpd with its default
// upload lock (a second writer waits), proftpd (refuses REST past the end)
// and pure-ftpd (writes at the end instead). The probe finds out, the
// upload goes over one stream, and nothing of the probe is left.
func TestSegmentedFTPUploadFallsBack(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), 16<<20)
	for _, tg := range []matrixTarget{
		{"ftp-vsftpd", "ftp", env.VsftpdPlain},
		{"ftp-proftpd", "ftp", env.Proftpd},
		{"ftp-pureftpd", "ftp", env.Pureftpd},
	} {
		t.Run(tg.name, func(t *testing.T) {
			r := newMatrixRig(t, env, tg)
			r.cfg.Segments = 4
			r.cfg.MinSegmentSize = 1 << 20
			r.cfg.StateDir = t.TempDir()
			var single atomic.Int32
			onEvent := r.cfg.OnEvent
			r.cfg.OnEvent = func(e transfer.Event) {
				if e.Kind == transfer.EventSingleStream {
					single.Add(1)
					t.Logf("single stream: %s", e.Reason)
				}
				onEvent(e)
			}
			remote := "segfallback-" + tg.name + ".bin"
			res, local, err := r.transfer(t, "upload", remote, src)
			if err != nil {
				t.Fatalf("%v (failures %v)", err, r.failures())
			}
			if testbed.SHA256File(t, local) != sum {
				t.Fatal("SHA-256 differs")
			}
			if single.Load() != 1 {
				t.Errorf("%d single-stream events, want 1", single.Load())
			}
			if res.Segments > 1 || res.Attempts != 1 {
				t.Errorf("want one stream, one attempt: %+v", res)
			}
			for _, leftover := range []string{remote + ".part.seg", remote + ".part"} {
				if _, err := os.Stat(tg.srv.LocalPath(leftover)); !os.IsNotExist(err) {
					t.Errorf("%s left on the server (%v)", leftover, err)
				}
			}
		})
	}
}
