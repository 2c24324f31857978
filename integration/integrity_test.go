package integration_test

// Never a silent corruption, secure by default (issue 4), against the real
// servers: corrupted partials, a source changed mid-transfer, verification
// methods per server, refused identities, injected paths, no password in
// debug logs.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/transfer"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// integrityTargets are every server and protocol of the test bed.
func integrityTargets(env *testbed.Env) []matrixTarget {
	return []matrixTarget{
		{"ftp-vsftpd", "ftp", env.VsftpdPlain},
		{"ftps-vsftpd", "ftps", env.VsftpdFTPS},
		{"ftp-proftpd", "ftp", env.Proftpd},
		{"sftp-proftpd", "sftp", env.ProftpdSFTP},
		{"ftp-pureftpd", "ftp", env.Pureftpd},
		{"sftp-openssh", "sftp", env.SSHD},
	}
}

// integrityFlip flips one byte near the end of a file on disk.
func integrityFlip(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Errorf("corrupt: %v", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() < 100 {
		t.Errorf("corrupt: %v size %d", err, fi.Size())
		return
	}
	b := []byte{0}
	_, _ = f.ReadAt(b, fi.Size()-7)
	b[0] ^= 0x5a
	_, _ = f.WriteAt(b, fi.Size()-7)
}

// Between attempts the partial's tail is corrupted (the remote .part for
// uploads, the local .part for downloads): the result must still be
// byte-identical, by a restart, never a splice.
func TestIntegrityCorruptedPartial(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), 32<<20)
	for _, tg := range integrityTargets(env) {
		for _, op := range []string{"upload", "download"} {
			t.Run(tg.name+"/"+op, func(t *testing.T) {
				r := newMatrixRig(t, env, tg)
				remote := fmt.Sprintf("corrupt-%s-%s.bin", tg.name, op)
				partial := filepath.Join(tg.srv.Root, remote+".part")
				if op == "download" {
					partial = r.local + ".part"
				}
				dir := matrixDir(op)
				r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: dir, Ports: r.data, After: 8 << 20})
				var restarts []string
				r.cfg.OnEvent = func(e transfer.Event) {
					switch e.Kind {
					case transfer.EventFailed:
						integrityFlip(t, partial)
					case transfer.EventRestart:
						restarts = append(restarts, e.Reason)
					}
				}
				res, local, err := r.transfer(t, op, remote, src)
				if err != nil {
					t.Fatal(err)
				}
				if testbed.SHA256File(t, local) != sum {
					t.Fatal("SHA-256 differs: spliced")
				}
				// Concurrent SFTP writes resume at the contiguous acknowledged
				// mark, which may lie before the flipped byte: then the
				// corruption is overwritten, not detected, and that is fine.
				if len(restarts) == 0 && !(tg.scheme == "sftp" && op == "upload") {
					t.Errorf("the corrupted partial was not detected: %+v", res)
				}
				t.Logf("verified=%s attempts=%d restarts=%v", res.Verified, res.Attempts, restarts)
			})
		}
	}
}

// The source is rewritten between attempts: the upload ends as a
// byte-identical copy of the new version.
func TestIntegritySourceChangedMidTransfer(t *testing.T) {
	env := testbed.Require(t)
	dir := t.TempDir()
	src, _ := testbed.RandomFile(t, dir, 24<<20)
	next, sum2 := testbed.RandomFile(t, dir, 20<<20)
	v2, err := os.ReadFile(next)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range []matrixTarget{{"ftp-vsftpd", "ftp", env.VsftpdPlain}, {"sftp-openssh", "sftp", env.SSHD}} {
		t.Run(tg.name, func(t *testing.T) {
			local := filepath.Join(t.TempDir(), "src.bin")
			b, _ := os.ReadFile(src)
			if err := os.WriteFile(local, b, 0o644); err != nil {
				t.Fatal(err)
			}
			r := newMatrixRig(t, env, tg)
			remote := "changed-" + tg.name + ".bin"
			_ = os.Remove(filepath.Join(tg.srv.Root, remote))
			r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Close, Dir: faultproxy.Upstream, Ports: r.data, After: 8 << 20})
			r.cfg.OnEvent = func(e transfer.Event) {
				if e.Kind == transfer.EventFailed {
					if err := os.WriteFile(local, v2, 0o644); err != nil {
						t.Error(err)
					}
					_ = os.Chtimes(local, time.Now(), time.Now().Add(2*time.Second))
				}
			}
			res, err := transfer.Put(context.Background(), local, r.url(remote), r.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if testbed.SHA256File(t, filepath.Join(tg.srv.Root, remote)) != sum2 || res.Restarts < 1 {
				t.Fatalf("not the new version: %+v", res)
			}
		})
	}
}

// Each server reports how it verified: a hash where it can (proftpd FTP
// mod_digest, proftpd SFTP check-file), size elsewhere, read-back on request.
func TestIntegrityVerifiedMethod(t *testing.T) {
	env := testbed.Require(t)
	src, _ := testbed.RandomFile(t, t.TempDir(), 8<<20)
	for _, c := range []struct {
		tg     matrixTarget
		policy transfer.VerifyPolicy
		want   string
	}{
		{matrixTarget{"ftp-vsftpd", "ftp", env.VsftpdPlain}, transfer.VerifyAuto, "size"},
		{matrixTarget{"ftp-vsftpd", "ftp", env.VsftpdPlain}, transfer.VerifyReadback, "readback"},
		{matrixTarget{"ftp-proftpd", "ftp", env.Proftpd}, transfer.VerifyAuto, "sha256"},
		{matrixTarget{"sftp-proftpd", "sftp", env.ProftpdSFTP}, transfer.VerifyAuto, "sha256"},
		{matrixTarget{"sftp-openssh", "sftp", env.SSHD}, transfer.VerifyReadback, "readback"},
		{matrixTarget{"sftp-openssh", "sftp", env.SSHD}, transfer.VerifyAuto, "sha1"}, // sha1sum over SSH exec
	} {
		t.Run(c.tg.name+"/"+c.policy.String(), func(t *testing.T) {
			r := newMatrixRig(t, env, c.tg)
			r.cfg.Verify = c.policy
			remote := "verified-" + c.tg.name + ".bin"
			res, err := transfer.Put(context.Background(), src, r.url(remote), r.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verified != c.want && !(c.want == "sha256" && strings.HasPrefix(res.Verified, "sha")) {
				t.Errorf("upload verified by %q, want %q", res.Verified, c.want)
			}
			res, err = transfer.Get(context.Background(), r.url(remote), filepath.Join(t.TempDir(), "x"), r.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verified != c.want && !(c.want == "sha256" && strings.HasPrefix(res.Verified, "sha")) {
				t.Errorf("download verified by %q, want %q", res.Verified, c.want)
			}
			t.Logf("verified by %s", res.Verified)
		})
	}
}

func TestSecurityHostKeyMismatch(t *testing.T) {
	env := testbed.Require(t)
	// known_hosts that vouches for another key under sshd's name.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{knownhosts.Line([]string{fmt.Sprintf("[%s]:%d", env.Host, env.SSHD.Port)}, sp)}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = transfer.Get(context.Background(), cliURL("sftp", env, env.SSHD, "x"), filepath.Join(t.TempDir(), "x"),
		transfer.Config{Password: env.Password, KnownHostsFile: kh})
	if !errors.Is(err, transfer.ErrHostKey) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "SHA256:") {
		t.Errorf("the error does not name the fingerprints: %v", err)
	}
	var re *transfer.Error
	if errors.As(err, &re) && re.Attempts != 1 {
		t.Errorf("retried a host-key mismatch: %d attempts", re.Attempts)
	}
	t.Log(err)
}

func TestSecurityBadCertificate(t *testing.T) {
	env := testbed.Require(t)
	// The system roots do not know the test bed's CA.
	_, err := transfer.Get(context.Background(), cliURL("ftps", env, env.VsftpdFTPS, "x"), filepath.Join(t.TempDir(), "x"),
		transfer.Config{Password: env.Password, TLSConfig: &tls.Config{ServerName: env.TLSServerName}})
	if !errors.Is(err, transfer.ErrHostKey) {
		t.Fatalf("err = %v", err)
	}
	// The right CA but the wrong name.
	tc := matrixTLS(t, env)
	tc.ServerName = "not-the-server.example"
	_, err = transfer.Get(context.Background(), cliURL("ftps", env, env.VsftpdFTPS, "x"), filepath.Join(t.TempDir(), "x"),
		transfer.Config{Password: env.Password, TLSConfig: tc})
	if !errors.Is(err, transfer.ErrHostKey) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

func TestSecurityCRLFPathRefused(t *testing.T) {
	env := testbed.Require(t)
	tr, err := transfer.Open(cliURL("ftp", env, env.VsftpdPlain, ""), transfer.Config{Password: env.Password})
	if err != nil {
		t.Fatal(err)
	}
	before := env.CountInLog(t, env.VsftpdPlain.Log, "DELE")
	src, _ := testbed.RandomFile(t, t.TempDir(), 1024)
	for _, p := range []string{"a\r\nDELE victim", "a\nDELE victim", "a\x00b"} {
		_, err := tr.Upload(context.Background(), src, p)
		if !errors.Is(err, transfer.ErrInvalidPath) {
			t.Errorf("%q: err = %v", p, err)
		}
		_, err = tr.Download(context.Background(), p, filepath.Join(t.TempDir(), "x"))
		if !errors.Is(err, transfer.ErrInvalidPath) {
			t.Errorf("%q: err = %v", p, err)
		}
	}
	if env.CountInLog(t, env.VsftpdPlain.Log, "DELE") != before {
		t.Error("a DELE reached the server")
	}
}

func TestSecurityNoPasswordInDebugLogs(t *testing.T) {
	env := testbed.Require(t)
	src, _ := testbed.RandomFile(t, t.TempDir(), 1<<20)
	for _, tg := range []matrixTarget{{"ftp-vsftpd", "ftp", env.VsftpdPlain}, {"ftps-vsftpd", "ftps", env.VsftpdFTPS}, {"sftp-openssh", "sftp", env.SSHD}} {
		t.Run(tg.name, func(t *testing.T) {
			var buf bytes.Buffer
			r := newMatrixRig(t, env, tg)
			r.cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Ports: r.data, Dir: faultproxy.Upstream, After: 256 << 10})
			if _, err := transfer.Put(context.Background(), src, r.url("nopw-"+tg.name+".bin"), r.cfg); err != nil {
				t.Fatal(err)
			}
			// A failed login logs too.
			bad := r.cfg
			bad.Password = "Sup3r-S3cret-Wr0ng"
			_, _ = transfer.Get(context.Background(), r.url("x"), filepath.Join(t.TempDir(), "x"), bad)
			if buf.Len() == 0 {
				t.Fatal("nothing was logged at debug level")
			}
			for _, pw := range []string{env.Password, bad.Password} {
				if strings.Contains(buf.String(), pw) {
					t.Fatalf("the password %q appears in the debug log", pw)
				}
			}
		})
	}
}
