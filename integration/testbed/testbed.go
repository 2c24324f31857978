// Package testbed locates the real servers that haul's integration tests run
// against, and offers small helpers those tests share.
//
// The servers are started by integration/testbed/up.sh (see README.md, "make
// up"), which writes a key=value env file, by default /tmp/haul-testbed/env.
// The environment variable HAUL_TESTBED_ENV names another file. Any key of the
// file can also be overridden by an environment variable HAUL_TESTBED_<KEY>
// (for example HAUL_TESTBED_HOST, HAUL_TESTBED_VSFTPD_PORT), which is how the
// tests are pointed at servers started some other way (docker compose, a
// remote lab).
//
// Tests call Require, which skips with a message telling how to start the test
// bed when the env file is absent, but fails when CI=true.
package testbed

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// DefaultEnvPath is where up.sh writes the env file when HAUL_TESTBED_ENV is
// not set.
const DefaultEnvPath = "/tmp/haul-testbed/env"

// EnvVar is the environment variable that overrides DefaultEnvPath.
const EnvVar = "HAUL_TESTBED_ENV"

// OverridePrefix prefixes environment variables that override single keys of
// the env file: HAUL_TESTBED_HOST overrides HOST.
const OverridePrefix = "HAUL_TESTBED_"

// Server describes one server of the test bed.
type Server struct {
	// Name is the key prefix in the env file, e.g. "VSFTPD" or "SSHD".
	Name string
	// Host is the address the server listens on (HOST of the env file).
	Host string
	// Port is the control (FTP) or SSH port.
	Port int
	// PasvMin and PasvMax bound the passive data port range; both are zero
	// for SFTP servers.
	PasvMin, PasvMax int
	// Root is the local directory that holds the server's files, writable by
	// the test user; tests may inspect or corrupt files there directly.
	Root string
	// Home is the remote path of Root as a client sees it after login ("/"
	// for the chrooted FTP servers, the absolute Root for OpenSSH).
	// Relative remote paths resolve against it on every server.
	Home string
	// FullDir is the remote path of a small tmpfs (FullLocal) that fills up
	// (ENOSPC), or "" when this server has none.
	FullDir string
	// FullLocal is the local mount point of that tmpfs, or "".
	FullLocal string
	// Log is the server's log file (for vsftpd, with the FTP protocol lines).
	Log string
	// PID is the server's listening (parent) process, or 0 when unknown.
	PID int
}

// Addr returns "host:port" of the server.
func (s Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// RemotePath returns the remote path of name inside the server's home.
func (s Server) RemotePath(name string) string {
	if s.Home == "" || s.Home == "/" {
		return "/" + strings.TrimPrefix(name, "/")
	}
	return strings.TrimSuffix(s.Home, "/") + "/" + strings.TrimPrefix(name, "/")
}

// Env is the loaded test bed description.
type Env struct {
	// Path is the env file this Env was loaded from.
	Path string
	// StateDir is the test bed's state directory (configs, logs, keys, roots).
	StateDir string
	// Host is the loopback address every server listens on.
	Host string
	// User and Password are the test account, valid on every server.
	User, Password string
	// CAFile is a PEM file with the CA that signed the FTPS certificate.
	CAFile string
	// TLSServerName is the name to verify the FTPS certificate against (its
	// SANs hold localhost and 127.0.0.1-127.0.0.9).
	TLSServerName string
	// SSHKeyFile is the test user's private key (OpenSSH format, no
	// passphrase); SSHPublicKeyFile its public half.
	SSHKeyFile, SSHPublicKeyFile string
	// KnownHostsFile lists the host keys of the SFTP servers for
	// [127.0.0.1-9]:port and [localhost]:port.
	KnownHostsFile string
	// FullSize is the size in bytes of each full tmpfs.
	FullSize int64

	// VsftpdPlain is vsftpd with plain FTP.
	VsftpdPlain Server
	// VsftpdFTPS is vsftpd with explicit FTPS (AUTH TLS, TLS required,
	// require_ssl_reuse=YES).
	VsftpdFTPS Server
	// VsftpdLimited is vsftpd with a short data_connection_timeout, a short
	// idle_session_timeout and a small max_per_ip. Use it only for fault tests:
	// concurrent use from several tests trips max_per_ip.
	VsftpdLimited Server
	// LimitedDataTimeout, LimitedIdleTimeout and LimitedMaxPerIP are
	// VsftpdLimited's settings.
	LimitedDataTimeout, LimitedIdleTimeout time.Duration
	// LimitedMaxPerIP is VsftpdLimited's max_per_ip.
	LimitedMaxPerIP int
	// VsftpdNoLock is vsftpd with lock_upload_files=NO: several
	// connections may write one file at once (segmented FTP uploads).
	VsftpdNoLock Server
	// Proftpd is proftpd (FTP) with mod_digest (HASH, XSHA256, ... with
	// ranges) and AllowStoreRestart on.
	Proftpd Server
	// ProftpdSFTP is proftpd's mod_sftp (SFTP with check-file).
	ProftpdSFTP Server
	// Pureftpd is pure-ftpd.
	Pureftpd Server
	// SSHD is OpenSSH sshd with internal-sftp, password and key login.
	SSHD Server
	// SSHDNoExec is a second OpenSSH sshd like SSHD (same user, keys and
	// known_hosts file) with ForceCommand internal-sftp: exec requests are
	// refused, so hashing by exec (sha256sum) is not available and
	// verification falls back to size. Its Port is zero when the env file
	// predates it (a test bed started by an older up.sh): restart the test
	// bed to get it.
	SSHDNoExec Server
	// RcloneSFTP is `rclone serve sftp` over a local directory with
	// --vfs-cache-mode off (Debian's rclone 1.60): it takes writes only in
	// offset order (a WRITE ahead of the file's end waits up to 1 s for the
	// gap to fill, then fails with SSH_FX_FAILURE "Illegal seek"), and every
	// open for writing, with or without O_TRUNC, replaces the file with what
	// that handle writes from offset 0 (on close), so an upload cannot
	// resume there; reads at any offset work, so downloads resume. A RENAME
	// of a file that another session still has open for writing is
	// answered OK and carried out only when that handle closes, with that
	// handle's content. Exec offers no sha256sum. Password and key login,
	// Home "/", its own ed25519 host key in KnownHostsFile. Not in
	// SFTPServers. Its Port is zero when the env file predates it: see
	// RequireServer.
	RcloneSFTP Server
	// PyftpdNoRest is pyftpdlib (integration/testbed/pyftpd_norest.py)
	// answering every REST with "502 Command 'REST' not implemented" (and
	// not offering REST STREAM in FEAT): no resume in either direction.
	// Not in FTPServers. Its Port is zero when the env file predates it:
	// see RequireServer.
	PyftpdNoRest Server
	// VsftpdBadPasv is vsftpd like VsftpdPlain whose PASV replies name
	// BadPasvAddress instead of its own (pasv_address, the classic NAT
	// misconfiguration): clients that connect where PASV says hang or
	// fail; haul connects to the control host. Not in FTPServers. Its Port
	// is zero when the env file predates it: see RequireServer.
	VsftpdBadPasv Server
	// BadPasvAddress is the address VsftpdBadPasv announces ("" when
	// unknown).
	BadPasvAddress string

	raw map[string]string
}

// Load reads an env file written by up.sh and applies HAUL_TESTBED_<KEY>
// overrides from the environment.
func Load(path string) (*Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	defer f.Close()
	raw := make(map[string]string)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("testbed: %s:%d: not key=value: %q", path, n, line)
		}
		raw[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("testbed: reading %s: %w", path, err)
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if key, ok := strings.CutPrefix(k, OverridePrefix); ok && key != "ENV" && key != "STATE" {
			raw[key] = v
		}
	}
	e := &Env{Path: path, raw: raw}
	if err := e.parse(); err != nil {
		return nil, fmt.Errorf("testbed: %s: %w", path, err)
	}
	return e, nil
}

type parser struct {
	raw  map[string]string
	errs []error
}

func (p *parser) str(key string, required bool) string {
	v, ok := p.raw[key]
	if !ok && required {
		p.errs = append(p.errs, fmt.Errorf("missing key %s", key))
	}
	return v
}

func (p *parser) int(key string, required bool) int {
	v := p.str(key, required)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("key %s: %w", key, err))
	}
	return n
}

func (p *parser) server(name, host string, ftp bool) Server {
	return Server{
		Name:      name,
		Host:      host,
		Port:      p.int(name+"_PORT", true),
		PasvMin:   p.int(name+"_PASV_MIN", ftp),
		PasvMax:   p.int(name+"_PASV_MAX", ftp),
		Root:      p.str(name+"_ROOT", false),
		Home:      p.str(name+"_HOME", false),
		FullDir:   p.str(name+"_FULL_DIR", false),
		FullLocal: p.str(name+"_FULL_LOCAL", false),
		Log:       p.str(name+"_LOG", false),
		PID:       p.int(name+"_PID", false),
	}
}

func (e *Env) parse() error {
	p := &parser{raw: e.raw}
	e.StateDir = p.str("STATE_DIR", false)
	e.Host = p.str("HOST", true)
	e.User = p.str("USER", true)
	e.Password = p.str("PASSWORD", true)
	e.CAFile = p.str("CA_FILE", false)
	e.TLSServerName = p.str("TLS_SERVER_NAME", false)
	e.SSHKeyFile = p.str("SSH_KEY_FILE", false)
	e.SSHPublicKeyFile = p.str("SSH_PUBLIC_KEY_FILE", false)
	e.KnownHostsFile = p.str("KNOWN_HOSTS_FILE", false)
	e.FullSize = int64(p.int("FULL_SIZE", false))
	e.VsftpdPlain = p.server("VSFTPD", e.Host, true)
	e.VsftpdFTPS = p.server("VSFTPS", e.Host, true)
	e.VsftpdLimited = p.server("VSFTPD_LIMITED", e.Host, true)
	e.LimitedDataTimeout = time.Duration(p.int("VSFTPD_LIMITED_DATA_TIMEOUT", false)) * time.Second
	e.LimitedIdleTimeout = time.Duration(p.int("VSFTPD_LIMITED_IDLE_TIMEOUT", false)) * time.Second
	e.LimitedMaxPerIP = p.int("VSFTPD_LIMITED_MAX_PER_IP", false)
	e.VsftpdNoLock = p.server("VSFTPD_NOLOCK", e.Host, true)
	e.Proftpd = p.server("PROFTPD", e.Host, true)
	e.ProftpdSFTP = p.server("PROFTPD_SFTP", e.Host, false)
	e.Pureftpd = p.server("PUREFTPD", e.Host, true)
	e.SSHD = p.server("SSHD", e.Host, false)
	// Optional, so that an env file from before them still loads.
	e.SSHDNoExec = p.optional("SSHD_NOEXEC", e.Host, false)
	e.RcloneSFTP = p.optional("RCLONE_SFTP", e.Host, false)
	e.PyftpdNoRest = p.optional("PYFTPD_NOREST", e.Host, true)
	e.VsftpdBadPasv = p.optional("VSFTPD_BADPASV", e.Host, true)
	e.BadPasvAddress = p.str("VSFTPD_BADPASV_ADDRESS", false)
	return errors.Join(p.errs...)
}

// optional is server for a server that older env files lack: absent (no
// <name>_PORT), it is a Server with only Name and Host, Port zero.
func (p *parser) optional(name, host string, ftp bool) Server {
	if _, ok := p.raw[name+"_PORT"]; !ok {
		return Server{Name: name, Host: host}
	}
	return p.server(name, host, ftp)
}

// Get returns the raw value of key ("" when absent), overrides applied.
func (e *Env) Get(key string) string { return e.raw[key] }

// Keys returns every key of the env file, sorted.
func (e *Env) Keys() []string {
	keys := make([]string, 0, len(e.raw))
	for k := range e.raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// FTPServers returns the FTP servers that behave normally (no limits):
// vsftpd plain, proftpd, pure-ftpd. FTPS and the limited vsftpd are apart.
func (e *Env) FTPServers() []Server { return []Server{e.VsftpdPlain, e.Proftpd, e.Pureftpd} }

// SFTPServers returns the SFTP servers: OpenSSH and proftpd mod_sftp.
func (e *Env) SFTPServers() []Server { return []Server{e.SSHD, e.ProftpdSFTP} }

// RequireServer stops a test that needs s when the env file does not
// describe it (Port zero: a test bed started by an older up.sh, before s was
// added): it skips the test with a message saying how to get the server,
// unless the environment variable CI is "true", where it fails the test.
func (e *Env) RequireServer(t testing.TB, s Server) {
	t.Helper()
	if s.Port != 0 {
		return
	}
	msg := fmt.Sprintf("the test bed has no %s server (%s was written by an older up.sh): "+
		"run integration/testbed/install.sh and up.sh again as root (up.sh starts only the "+
		"missing servers) or restart the test bed with `make down && make up`", s.Name, e.Path)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " [CI=true: a missing server is a failure]")
	}
	t.Skip(msg)
}

// EnvPath returns the env file path: $HAUL_TESTBED_ENV, else
// $HAUL_TESTBED_STATE/env (the scripts' state dir), else DefaultEnvPath.
func EnvPath() string {
	if p := os.Getenv(EnvVar); p != "" {
		return p
	}
	if d := os.Getenv("HAUL_TESTBED_STATE"); d != "" {
		return filepath.Join(d, "env")
	}
	return DefaultEnvPath
}

// Require loads the test bed for a test. When the env file does not exist it
// skips the test with a message saying how to start the servers, unless the
// environment variable CI is "true", where it fails the test instead. Any
// other load error fails the test.
func Require(t testing.TB) *Env {
	t.Helper()
	path := EnvPath()
	e, err := Load(path)
	if err == nil {
		return e
	}
	if errors.Is(err, os.ErrNotExist) {
		msg := fmt.Sprintf("test bed not running (%s not found): start it with `make up` "+
			"(as root: integration/testbed/install.sh && integration/testbed/up.sh), "+
			"or set %s to an env file describing other servers", path, EnvVar)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " [CI=true: a missing test bed is a failure]")
		}
		t.Skip(msg)
	}
	t.Fatalf("%v", err)
	return nil
}

// TLSConfig returns a client TLS configuration for the FTPS server: RootCAs
// from CAFile, a fixed ServerName and an LRU session cache, so that data
// connections can resume the control connection's TLS session (vsftpd's
// require_ssl_reuse=YES). Each call returns a new cache; share one config
// per FTP session.
func (e *Env) TLSConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(e.CAFile)
	if err != nil {
		return nil, fmt.Errorf("testbed: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("testbed: no certificate in %s", e.CAFile)
	}
	name := e.TLSServerName
	if name == "" {
		name = e.Host
	}
	return &tls.Config{
		RootCAs:            pool,
		ServerName:         name,
		ClientSessionCache: tls.NewLRUClientSessionCache(32),
		MinVersion:         tls.VersionTLS12,
	}, nil
}

// SSHConfig returns an SSH client configuration for the test user that
// verifies host keys against KnownHostsFile. With useKey it authenticates
// with SSHKeyFile only, otherwise with the password only. Its Timeout (5 s)
// covers only the TCP dial.
func (e *Env) SSHConfig(useKey bool) (*ssh.ClientConfig, error) {
	hk, err := knownhosts.New(e.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("testbed: known_hosts: %w", err)
	}
	cfg := &ssh.ClientConfig{
		User:            e.User,
		HostKeyCallback: hk,
		Timeout:         5 * time.Second,
	}
	if useKey {
		pem, err := os.ReadFile(e.SSHKeyFile)
		if err != nil {
			return nil, fmt.Errorf("testbed: ssh key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, fmt.Errorf("testbed: ssh key %s: %w", e.SSHKeyFile, err)
		}
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(signer)}
	} else {
		cfg.Auth = []ssh.AuthMethod{ssh.Password(e.Password)}
	}
	return cfg, nil
}

// CountInLog returns how many lines of logfile contain substr (0 when the file
// does not exist). vsftpd logs every FTP command and reply, so counting
// `"USER haultest"` or `"OK LOGIN"` in its log counts login attempts; sshd logs
// "Accepted password for" / "Accepted publickey for".
func (e *Env) CountInLog(t testing.TB, logfile, substr string) int {
	t.Helper()
	f, err := os.Open(logfile)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	defer f.Close()
	n := 0
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadString('\n')
		if strings.Contains(line, substr) {
			n++
		}
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("testbed: reading %s: %v", logfile, err)
		}
	}
}

// RandomFile writes size pseudo-random bytes to a new file in dir and returns
// its path and SHA-256. The content is deterministic for a given size (a fast
// seeded generator, not crypto/rand), so large files are cheap to make.
func RandomFile(t testing.TB, dir string, size int64) (path string, sum [32]byte) {
	t.Helper()
	f, err := os.CreateTemp(dir, fmt.Sprintf("haul-random-%d-*.bin", size))
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(NewRandReader(uint64(size)), size)); err != nil {
		t.Fatalf("testbed: writing %s: %v", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("testbed: closing %s: %v", f.Name(), err)
	}
	copy(sum[:], h.Sum(nil))
	return f.Name(), sum
}

// NewRandReader returns an endless reader of deterministic pseudo-random
// bytes derived from seed (ChaCha8; fast, not for secrets).
func NewRandReader(seed uint64) io.Reader {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
	}
	copy(s[8:], "haul-testbed-random-seed")
	return rand.NewChaCha8(s)
}

// SHA256File returns the SHA-256 of the file at path.
func SHA256File(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("testbed: hashing %s: %v", path, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// LocalPath returns the local file system path of the remote path name on
// server s (name relative to the server's home, or absolute as the client
// sees it), so tests can inspect or alter the server-side file directly.
func (s Server) LocalPath(name string) string {
	if !filepath.IsAbs(name) {
		return filepath.Join(s.Root, name)
	}
	if s.Home != "" && s.Home != "/" {
		if rel, err := filepath.Rel(s.Home, name); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(s.Root, rel)
		}
		return name
	}
	return filepath.Join(s.Root, name)
}
