package demo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/openhaul/haul/integration/faultproxy"
)

// DefaultSize is the size of the demo's file when Options.Size is zero.
const DefaultSize = 64 << 20

// MinSize is the smallest file the scenario moves: below it the cuts at 30
// and 70 % would fall within a packet or two.
const MinSize = 1 << 20

// DefaultStallTimeout is the stall timeout handed to haul when
// Options.StallTimeout is zero: how long a blackholed connection stays
// silent before haul's watchdog gives up on it.
const DefaultStallTimeout = time.Second

// pasvCount is the number of passive FTP data ports: enough for haul's
// largest --segments and a stale connection or two.
const pasvCount = 16

// Options configures a Lab. The zero value is the documented default.
type Options struct {
	// Size is the size of the generated file moved in each direction.
	// Zero means DefaultSize; less than MinSize means MinSize.
	Size int64
	// StallTimeout is haul's --stall-timeout in the scenario. Zero means
	// DefaultStallTimeout.
	StallTimeout time.Duration
}

func (o Options) size() int64 {
	if o.Size == 0 {
		return DefaultSize
	}
	return max(o.Size, MinSize)
}

func (o Options) stallTimeout() time.Duration {
	if o.StallTimeout <= 0 {
		return DefaultStallTimeout
	}
	return o.StallTimeout
}

// Lab is a running demo: an FTP and an SFTP server on 127.0.0.1, each on
// random ports, reached through a fault-injecting link (the fault proxy of
// integration/faultproxy on another loopback address), everything under one
// temporary directory that Close removes. Its URLs lead through the link;
// the link forwards faithfully unless a scenario arms a fault.
type Lab struct {
	// Dir is the temporary directory holding everything the lab writes:
	// the servers' root (Dir/server), the local files (Dir/local), the
	// credentials files, and a cache directory (Dir/cache).
	Dir string
	// FTPURL and SFTPURL are the base URLs of the servers through the link,
	// with the user name and no password, ending in "/" (the servers'
	// root, which is the login directory).
	FTPURL, SFTPURL string
	// User and Password are the login of both servers. The password is
	// random and also in PasswordFile (for haul --password-file).
	User, Password, PasswordFile string
	// KnownHostsFile is a known_hosts file naming the SFTP server's host
	// key (generated at Start) for its address through the link and its
	// direct address, for haul --known-hosts.
	KnownHostsFile string
	// SampleFile is the name, under the servers' root, of a generated file
	// to download.
	SampleFile string

	opts   Options
	events notifier
	ftp    *ftpServer
	sftp   *sftpServer
	proxy  *faultproxy.Proxy
	closed bool
}

// Start starts a lab: it creates the temporary directory, generates the
// sample file of opts.Size bytes, and starts the servers and the link.
// Close it when done.
func Start(opts Options) (_ *Lab, err error) {
	dir, err := os.MkdirTemp("", "haul-demo-")
	if err != nil {
		return nil, err
	}
	l := &Lab{Dir: dir, User: "demo", SampleFile: "sample.bin", opts: opts}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	for _, d := range []string{l.serverDir(), l.localDir(), l.CacheDir()} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	l.Password = hex.EncodeToString(pw)
	l.PasswordFile = filepath.Join(dir, "password")
	if err := os.WriteFile(l.PasswordFile, []byte(l.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := generate(filepath.Join(l.serverDir(), l.SampleFile), opts.size(), 2); err != nil {
		return nil, err
	}
	if l.ftp, err = newFTPServer(l.serverDir(), l.User, l.Password, pasvCount, &l.events); err != nil {
		return nil, fmt.Errorf("demo: FTP server: %w", err)
	}
	if l.sftp, err = newSFTPServer(l.serverDir(), l.User, l.Password, &l.events); err != nil {
		return nil, fmt.Errorf("demo: SFTP server: %w", err)
	}
	ports := append([]int{l.ftp.port(), l.sftp.port()}, l.ftp.pasvPorts()...)
	if l.proxy, err = faultproxy.NewLoopback("127.0.0.1", ports...); err != nil {
		return nil, fmt.Errorf("demo: link: %w", err)
	}
	l.FTPURL = "ftp://" + l.User + "@" + l.proxy.Addr(l.ftp.port()) + "/"
	l.SFTPURL = "sftp://" + l.User + "@" + l.proxy.Addr(l.sftp.port()) + "/"
	l.KnownHostsFile = filepath.Join(dir, "known_hosts")
	key := l.sftp.hostKey.PublicKey()
	lines := knownhosts.Line([]string{
		knownhosts.Normalize(l.proxy.Addr(l.sftp.port())),
		knownhosts.Normalize(net.JoinHostPort("127.0.0.1", strconv.Itoa(l.sftp.port()))),
	}, key) + "\n"
	if err := os.WriteFile(l.KnownHostsFile, []byte(lines), 0o600); err != nil {
		return nil, err
	}
	return l, nil
}

// HostKeyFingerprint returns the SHA-256 fingerprint of the SFTP server's
// host key, as ssh-keygen -l prints it.
func (l *Lab) HostKeyFingerprint() string {
	return ssh.FingerprintSHA256(l.sftp.hostKey.PublicKey())
}

// CacheDir is a directory under Dir for haul's state files (its cache
// directory, XDG_CACHE_HOME, while the scenario runs), so that the demo
// writes nothing outside Dir.
func (l *Lab) CacheDir() string { return filepath.Join(l.Dir, "cache") }

func (l *Lab) serverDir() string { return filepath.Join(l.Dir, "server") }
func (l *Lab) localDir() string  { return filepath.Join(l.Dir, "local") }

// Close stops the link and the servers, closing every connection, and
// removes Dir. It is safe to call more than once.
func (l *Lab) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	if l.proxy != nil {
		errs = append(errs, l.proxy.Close())
	}
	if l.ftp != nil {
		l.ftp.Close()
	}
	if l.sftp != nil {
		l.sftp.Close()
	}
	errs = append(errs, os.RemoveAll(l.Dir))
	return errors.Join(errs...)
}
