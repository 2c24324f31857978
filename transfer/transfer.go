// Package transfer is what haul's users import: one Transfer interface
// that uploads and downloads large files over FTP, FTPS and SFTP and
// finishes them despite dropped connections, opened from a URL.
//
//	t, err := transfer.Open("sftp://alice@files.example.com", transfer.Config{})
//	res, err := t.Upload(ctx, "backup.tar", "incoming/backup.tar")
//
// Every transfer reconnects with exponential backoff after a transient
// failure, resumes at the exact byte offset the remote reports, aborts and
// resumes an attempt that stalls, and reports success only once the result
// is verified. Authentication failures, missing files, permission errors
// and full disks are never retried. Failures are *Error values that say
// how many bytes were committed.
package transfer

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/openhaul/haul/protocol"
	pftp "github.com/openhaul/haul/protocol/ftp"
	psftp "github.com/openhaul/haul/protocol/sftp"
	"github.com/openhaul/haul/resume"
)

// Result describes a finished transfer: size, attempts, resumes, bytes
// re-sent because of faults, duration and how the result was verified.
type Result = resume.Result

// VerifyPolicy says how a finished transfer is proven identical: auto
// (the zero value), size, hash or readback.
type VerifyPolicy = resume.VerifyPolicy

// The verification policies.
const (
	VerifyAuto     = resume.VerifyAuto
	VerifySize     = resume.VerifySize
	VerifyHash     = resume.VerifyHash
	VerifyReadback = resume.VerifyReadback
)

// ParseVerifyPolicy parses "auto", "size", "hash" or "readback".
func ParseVerifyPolicy(s string) (VerifyPolicy, error) { return resume.ParseVerifyPolicy(s) }

// Event is one step of a transfer (attempt, failure, backoff, restart,
// verification), delivered to Config.OnEvent.
type Event = resume.Event

// EventKind says what an Event reports.
type EventKind = resume.EventKind

// The kinds of Event; see the resume package for each one's fields.
const (
	EventAttempt      = resume.EventAttempt
	EventFailed       = resume.EventFailed
	EventBackoff      = resume.EventBackoff
	EventRestart      = resume.EventRestart
	EventVerified     = resume.EventVerified
	EventSingleStream = resume.EventSingleStream
)

// Transfer moves files between local paths and one server.
//
// Remote paths follow haul's rule: relative paths are relative to the
// login directory, absolute paths start with "/". A Transfer holds no
// connection between calls; each call dials (and re-dials after faults)
// as it needs. Methods may be called concurrently.
type Transfer interface {
	// Upload sends the local file to remotePath and returns once the
	// remote file is complete and verified. The data goes to remotePath +
	// Config.PartSuffix and is renamed into place after verification
	// (unless Config.DirectUpload), so an existing remotePath is replaced
	// atomically and never seen half-written.
	Upload(ctx context.Context, localPath, remotePath string) (Result, error)
	// Download fetches remotePath into localPath. The data goes to
	// localPath + Config.PartSuffix until it is complete and verified,
	// then is renamed into place; an existing partial is resumed.
	Download(ctx context.Context, remotePath, localPath string) (Result, error)
}

type client struct {
	ep   Endpoint
	cfg  Config
	dial protocol.Dialer
}

var _ Transfer = (*client)(nil)

// Open returns a Transfer for the server named by rawURL (ftp://,
// ftps:// for explicit TLS, ftps+implicit://, sftp://). The URL's path, if
// any, is ignored; see Put and Get for one-shot transfers to a URL. Open
// validates the configuration but does not connect.
func Open(rawURL string, cfg Config) (Transfer, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return open(ep, cfg)
}

func open(ep Endpoint, cfg Config) (*client, error) {
	if ep.password == "" {
		ep.password = cfg.Password
	}
	c := &client{ep: ep, cfg: cfg}
	var err error
	switch ep.Scheme {
	case "ftp", "ftps", "ftps+implicit":
		c.dial, err = ftpDialer(ep, cfg)
	case "sftp":
		c.dial, err = sftpDialer(ep, cfg)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Put uploads localPath to the file named by rawURL.
func Put(ctx context.Context, localPath, rawURL string, cfg Config) (Result, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return Result{}, err
	}
	c, err := open(ep, cfg)
	if err != nil {
		return Result{}, err
	}
	return c.Upload(ctx, localPath, ep.Path)
}

// Get downloads the file named by rawURL to localPath.
func Get(ctx context.Context, rawURL, localPath string, cfg Config) (Result, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return Result{}, err
	}
	c, err := open(ep, cfg)
	if err != nil {
		return Result{}, err
	}
	return c.Download(ctx, ep.Path, localPath)
}

func (c *client) Upload(ctx context.Context, localPath, remotePath string) (Result, error) {
	f, err := os.Open(localPath)
	if err != nil {
		return Result{}, &resume.Error{Op: "upload", Path: remotePath, Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Result{}, &resume.Error{Op: "upload", Path: remotePath, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return Result{}, &resume.Error{Op: "upload", Path: remotePath, Err: fmt.Errorf("%s: not a regular file", localPath)}
	}
	ecfg := c.cfg.engine()
	if !c.cfg.DirectUpload {
		ecfg.TempPath = remotePath + c.cfg.partSuffix()
	}
	// The state file records what the remote partial is known to hold, so
	// that a later run (after a crash) resumes only what it can prove.
	ecfg.StatePath = c.uploadStatePath(localPath, remotePath)
	return resume.Upload(ctx, c.dial, f, remotePath, ecfg)
}

func (c *client) Download(ctx context.Context, remotePath, localPath string) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{}, &resume.Error{Op: "download", Path: remotePath, Err: err}
	}
	part := localPath + c.cfg.partSuffix()
	_, statErr := os.Lstat(part)
	created := errors.Is(statErr, fs.ErrNotExist)
	// Never through a link planted at the partial's name, and only into a
	// regular file.
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE|oNoFollow, 0o644)
	if err != nil {
		return Result{}, &resume.Error{Op: "download", Path: remotePath, Err: err}
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: not a regular file", part)
		}
		return Result{}, &resume.Error{Op: "download", Path: remotePath, Err: err}
	}
	ecfg := c.cfg.engine()
	ecfg.StatePath = part + ".state"
	res, err := resume.Download(ctx, c.dial, remotePath, f, ecfg)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &resume.Error{Op: "download", Path: remotePath, Committed: res.Size, Attempts: res.Attempts, Err: cerr}
	}
	if err != nil {
		// A partial this call created and never wrote to is not worth
		// keeping (a missing remote file, a rejected login).
		if fi, serr := os.Stat(part); created && serr == nil && fi.Size() == 0 {
			_ = os.Remove(part)
		}
		return res, err
	}
	if err := os.Rename(part, localPath); err != nil {
		return res, &resume.Error{Op: "download", Path: remotePath, Committed: res.Size, Attempts: res.Attempts, Err: err}
	}
	return res, nil
}

// uploadStatePath names the state file of a segmented upload of localPath
// to remotePath on this server, or "" when there is no state directory.
func (c *client) uploadStatePath(localPath, remotePath string) string {
	dir := c.cfg.StateDir
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(cache, "haul")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ""
	}
	abs, err := filepath.Abs(localPath)
	if err != nil {
		return ""
	}
	key := sha256.Sum256([]byte(c.ep.Scheme + "\x00" + c.ep.User + "@" + c.ep.Addr() + "\x00" + remotePath + "\x00" + abs))
	return filepath.Join(dir, "upload-"+hex.EncodeToString(key[:12])+".json")
}

func ftpDialer(ep Endpoint, cfg Config) (protocol.Dialer, error) {
	opts := []pftp.Option{
		pftp.WithCredentials(ep.User, ep.password),
		pftp.WithDialTimeout(cfg.dialTimeout()),
	}
	if ka := cfg.keepAlive(); ka > 0 {
		opts = append(opts, pftp.WithKeepAlive(net.KeepAliveConfig{Enable: true, Idle: ka, Interval: ka, Count: 4}))
	} else {
		opts = append(opts, pftp.WithKeepAlive(net.KeepAliveConfig{Enable: false}))
	}
	if cfg.Logger != nil {
		opts = append(opts, pftp.WithLogger(cfg.Logger))
	}
	if ep.Scheme != "ftp" {
		tc := &tls.Config{ServerName: ep.Host, MinVersion: tls.VersionTLS12}
		if cfg.TLSConfig != nil {
			tc = cfg.TLSConfig.Clone()
			if tc.ServerName == "" {
				tc.ServerName = ep.Host
			}
		}
		if ep.Scheme == "ftps+implicit" {
			opts = append(opts, pftp.WithImplicitTLS(tc))
		} else {
			opts = append(opts, pftp.WithExplicitTLS(tc))
		}
	}
	return pftp.Dialer(ep.Addr(), opts...), nil
}

func sftpDialer(ep Endpoint, cfg Config) (protocol.Dialer, error) {
	if ep.User == "" {
		return nil, &protocol.Error{Op: "parse URL", Kind: protocol.ErrInvalidPath, Err: errors.New("sftp URL needs a user name (sftp://user@host)")}
	}
	opts := []psftp.Option{
		psftp.WithUser(ep.User),
		psftp.WithDialTimeout(cfg.dialTimeout()),
	}
	if ep.password != "" {
		opts = append(opts, psftp.WithPassword(ep.password))
	}
	if cfg.IdentityFile != "" {
		opts = append(opts, psftp.WithPrivateKeyFile(cfg.IdentityFile))
	}
	if cfg.UseAgent {
		opts = append(opts, psftp.WithAgent())
	}
	switch {
	case cfg.InsecureIgnoreHostKey:
		opts = append(opts, psftp.WithInsecureIgnoreHostKey())
	case cfg.KnownHostsFile != "":
		opts = append(opts, psftp.WithKnownHostsFile(expandHome(cfg.KnownHostsFile)))
	}
	if ka := cfg.keepAlive(); ka > 0 {
		opts = append(opts, psftp.WithKeepAlive(ka))
	}
	if cfg.NoExecHash {
		opts = append(opts, psftp.WithExecHash(false))
	}
	if cfg.Logger != nil {
		opts = append(opts, psftp.WithLogger(cfg.Logger))
	}
	return psftp.Dialer(ep.Addr(), opts...), nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return home + "/" + rest
		}
	}
	return p
}
