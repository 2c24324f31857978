package testbed

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sampleEnv = `# comment
STATE_DIR=/s
HOST=127.0.0.1
USER=u
PASSWORD=p=w
CA_FILE=/s/ca.pem
VSFTPD_PORT=2121
VSFTPD_PASV_MIN=30000
VSFTPD_PASV_MAX=30019
VSFTPD_ROOT=/s/root/vsftpd
VSFTPD_HOME=/
VSFTPD_FULL_DIR=/full
VSFTPS_PORT=2122
VSFTPS_PASV_MIN=1
VSFTPS_PASV_MAX=2
VSFTPD_LIMITED_PORT=2123
VSFTPD_LIMITED_PASV_MIN=1
VSFTPD_LIMITED_PASV_MAX=2
VSFTPD_LIMITED_DATA_TIMEOUT=3
VSFTPD_LIMITED_MAX_PER_IP=3
VSFTPD_NOLOCK_PORT=2126
VSFTPD_NOLOCK_PASV_MIN=1
VSFTPD_NOLOCK_PASV_MAX=2
PROFTPD_PORT=2124
PROFTPD_PASV_MIN=1
PROFTPD_PASV_MAX=2
PROFTPD_SFTP_PORT=2225
PUREFTPD_PORT=2125
PUREFTPD_PASV_MIN=1
PUREFTPD_PASV_MAX=2
SSHD_PORT=2222
SSHD_ROOT=/s/root/sshd
SSHD_HOME=/s/root/sshd
SSHD_NOEXEC_PORT=2223
SSHD_NOEXEC_ROOT=/s/root/sshd-noexec
SSHD_NOEXEC_HOME=/s/root/sshd-noexec
SSHD_NOEXEC_LOG=/s/log/sshd-noexec.log
SSHD_NOEXEC_PID=42
RCLONE_SFTP_PORT=2227
RCLONE_SFTP_ROOT=/s/root/rclone-sftp
RCLONE_SFTP_HOME=/
RCLONE_SFTP_LOG=/s/log/rclone-sftp.log
RCLONE_SFTP_PID=43
PYFTPD_NOREST_PORT=2228
PYFTPD_NOREST_PASV_MIN=30120
PYFTPD_NOREST_PASV_MAX=30139
PYFTPD_NOREST_ROOT=/s/root/pyftpd-norest
PYFTPD_NOREST_HOME=/
PYFTPD_NOREST_LOG=/s/log/pyftpd-norest.log
PYFTPD_NOREST_PID=44
VSFTPD_BADPASV_PORT=2129
VSFTPD_BADPASV_PASV_MIN=30140
VSFTPD_BADPASV_PASV_MAX=30159
VSFTPD_BADPASV_ROOT=/s/root/vsftpd-badpasv
VSFTPD_BADPASV_HOME=/
VSFTPD_BADPASV_LOG=/s/log/vsftpd-badpasv.log
VSFTPD_BADPASV_PID=45
VSFTPD_BADPASV_ADDRESS=192.0.2.1
`

func TestLoadParsesAndOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte(sampleEnv), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HAUL_TESTBED_SSHD_PORT", "2999")
	e, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if e.Password != "p=w" || e.VsftpdPlain.Addr() != "127.0.0.1:2121" || e.VsftpdPlain.PasvMax != 30019 {
		t.Fatalf("unexpected parse: %+v", e)
	}
	if e.SSHD.Port != 2999 {
		t.Fatalf("override not applied: SSHD.Port=%d", e.SSHD.Port)
	}
	if e.LimitedDataTimeout != 3*time.Second || e.LimitedMaxPerIP != 3 {
		t.Fatalf("limited settings: %v %d", e.LimitedDataTimeout, e.LimitedMaxPerIP)
	}
	if got := e.SSHD.LocalPath("/s/root/sshd/a/b"); got != "/s/root/sshd/a/b" {
		t.Fatalf("LocalPath sshd: %s", got)
	}
	if got := e.VsftpdPlain.LocalPath("/full/x"); got != "/s/root/vsftpd/full/x" {
		t.Fatalf("LocalPath vsftpd: %s", got)
	}
	if got := e.SSHD.RemotePath("x"); got != "/s/root/sshd/x" {
		t.Fatalf("RemotePath: %s", got)
	}
	nx := e.SSHDNoExec
	if nx.Name != "SSHD_NOEXEC" || nx.Addr() != "127.0.0.1:2223" || nx.PasvMin != 0 || nx.PID != 42 ||
		nx.LocalPath("/s/root/sshd-noexec/y") != "/s/root/sshd-noexec/y" || nx.Log != "/s/log/sshd-noexec.log" {
		t.Fatalf("SSHD_NOEXEC: %+v", nx)
	}
	rc := e.RcloneSFTP
	if rc.Name != "RCLONE_SFTP" || rc.Addr() != "127.0.0.1:2227" || rc.PasvMin != 0 || rc.PID != 43 ||
		rc.RemotePath("x") != "/x" || rc.LocalPath("/a/b") != "/s/root/rclone-sftp/a/b" {
		t.Fatalf("RCLONE_SFTP: %+v", rc)
	}
	py := e.PyftpdNoRest
	if py.Name != "PYFTPD_NOREST" || py.Addr() != "127.0.0.1:2228" || py.PasvMin != 30120 || py.PasvMax != 30139 ||
		py.PID != 44 || py.LocalPath("/y") != "/s/root/pyftpd-norest/y" || py.Log != "/s/log/pyftpd-norest.log" {
		t.Fatalf("PYFTPD_NOREST: %+v", py)
	}
	bp := e.VsftpdBadPasv
	if bp.Name != "VSFTPD_BADPASV" || bp.Addr() != "127.0.0.1:2129" || bp.PasvMin != 30140 || bp.PasvMax != 30159 ||
		bp.PID != 45 || e.BadPasvAddress != "192.0.2.1" {
		t.Fatalf("VSFTPD_BADPASV: %+v %q", bp, e.BadPasvAddress)
	}
}

// An env file written before SSHD_NOEXEC existed still loads; the server
// is then absent (port 0).
func TestLoadWithoutSSHDNoExec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	old := strings.Split(sampleEnv, "SSHD_NOEXEC_PORT")[0]
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if e.SSHDNoExec.Port != 0 || e.SSHDNoExec.Name != "SSHD_NOEXEC" || e.SSHD.Port != 2222 {
		t.Fatalf("SSHD_NOEXEC: %+v", e.SSHDNoExec)
	}
	if e.RcloneSFTP.Port != 0 || e.RcloneSFTP.Name != "RCLONE_SFTP" ||
		e.PyftpdNoRest.Port != 0 || e.PyftpdNoRest.Name != "PYFTPD_NOREST" {
		t.Fatalf("RCLONE_SFTP %+v, PYFTPD_NOREST %+v", e.RcloneSFTP, e.PyftpdNoRest)
	}
	if e.VsftpdBadPasv.Port != 0 || e.VsftpdBadPasv.Name != "VSFTPD_BADPASV" {
		t.Fatalf("VSFTPD_BADPASV %+v", e.VsftpdBadPasv)
	}
}

// An env file with SSHD_NOEXEC but written before RCLONE_SFTP and
// PYFTPD_NOREST existed still loads, those two absent; an FTP server that
// is present needs its passive range.
func TestLoadWithoutDegradedServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	old := strings.Split(sampleEnv, "RCLONE_SFTP_PORT")[0]
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if e.SSHDNoExec.Port != 2223 || e.RcloneSFTP.Port != 0 || e.PyftpdNoRest.Port != 0 {
		t.Fatalf("SSHD_NOEXEC %+v, RCLONE_SFTP %+v, PYFTPD_NOREST %+v", e.SSHDNoExec, e.RcloneSFTP, e.PyftpdNoRest)
	}
	if err := os.WriteFile(path, []byte(old+"PYFTPD_NOREST_PORT=2228\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "PYFTPD_NOREST_PASV_MIN") {
		t.Fatalf("PYFTPD_NOREST without a passive range: %v", err)
	}
}

// RequireServer passes a server the env file describes and skips (outside
// CI) for one it lacks.
func TestRequireServer(t *testing.T) {
	e := &Env{Path: "/x/env"}
	e.RequireServer(t, Server{Name: "SSHD", Port: 2222})
	if os.Getenv("CI") == "true" {
		return // it would fail the test instead
	}
	returned := false
	t.Run("absent", func(t *testing.T) {
		e.RequireServer(t, Server{Name: "RCLONE_SFTP"})
		returned = true
	})
	if returned {
		t.Fatal("RequireServer did not stop the test for an absent server")
	}
}

func TestLoadRejectsMissingKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte("HOST=127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Fatal("Load accepted an env file without ports")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "absent")); !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestRandomFileDeterministic(t *testing.T) {
	dir := t.TempDir()
	p1, s1 := RandomFile(t, dir, 1<<20+7)
	p2, s2 := RandomFile(t, dir, 1<<20+7)
	if p1 == p2 || s1 != s2 {
		t.Fatal("same size must give same content in distinct files")
	}
	if SHA256File(t, p1) != s1 {
		t.Fatal("SHA256File disagrees with RandomFile")
	}
	b, _ := os.ReadFile(p1)
	if int64(len(b)) != 1<<20+7 || sha256.Sum256(b) != s1 || bytes.Count(b, []byte{0}) > len(b)/100 {
		t.Fatal("bad random content")
	}
	var buf [16]byte
	if _, err := io.ReadFull(NewRandReader(1), buf[:]); err != nil {
		t.Fatal(err)
	}
}

func TestCountInLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a USER x\nb\nc USER y\nUSER z"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &Env{}
	if n := e.CountInLog(t, path, "USER"); n != 3 {
		t.Fatalf("CountInLog=%d", n)
	}
	if n := e.CountInLog(t, path+".absent", "USER"); n != 0 {
		t.Fatalf("absent log: %d", n)
	}
}

func TestRequireLoadsRunningBed(t *testing.T) {
	e := Require(t)
	if e.Host == "" || e.SSHD.Port == 0 {
		t.Fatalf("incomplete env: %+v", e)
	}
	if _, err := e.TLSConfig(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SSHConfig(true); err != nil {
		t.Fatal(err)
	}
}
