// Package transfer is what haul's users import: a Client, opened from a
// URL, that uploads and downloads large files over FTP, FTPS and SFTP and
// finishes them despite dropped connections, and works on the server's
// files (Stat, ReadDir, Walk, MkdirAll, Remove, Rename) over a pool of
// logged-in sessions.
//
//	c, err := transfer.Open("sftp://alice@files.example.com", transfer.Config{})
//	defer c.Close()
//	res, err := c.Upload(ctx, "backup.tar", "incoming/backup.tar")
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
	"golang.org/x/crypto/ssh"
)

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

// Transfer is the part of *Client that moves files between local paths
// and one server, for code that wants an interface it can fake.
//
// Remote paths follow haul's rule: relative paths are relative to the
// login directory, absolute paths start with "/". Methods may be called
// concurrently.
type Transfer interface {
	// Upload sends the local file to remotePath and returns once the
	// remote file is complete and verified. A remotePath that is empty
	// or ends in "/" names a directory: the file goes into it under
	// localPath's base name. localPath must be a regular file (a fifo or
	// device is refused with ErrNotRegular). The data goes to remotePath +
	// Config.PartSuffix and is renamed into place after verification
	// (unless Config.DirectUpload), so an existing remotePath is replaced
	// atomically and never seen half-written.
	Upload(ctx context.Context, localPath, remotePath string) (Result, error)
	// Download fetches remotePath into localPath. A localPath that is a
	// directory or ends in a separator means the remote base name inside
	// it (see LocalPath). The data goes to localPath + Config.PartSuffix
	// until it is complete and verified, then is renamed into place; an
	// existing partial is resumed. Only a regular file is written or
	// replaced: a target, partial or state file that exists as anything
	// else (a device, fifo, socket, directory or symbolic link) fails with
	// ErrNotRegular before any connection is made.
	Download(ctx context.Context, remotePath, localPath string) (Result, error)
}

// Put uploads localPath to the file named by rawURL, or into the
// directory it names when its path is empty or ends in "/", under
// localPath's base name.
func Put(ctx context.Context, localPath, rawURL string, cfg Config) (Result, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return Result{}, err
	}
	c, err := open(ep, cfg)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	return c.Upload(ctx, localPath, ep.Path)
}

// Get downloads the file named by rawURL to localPath, or into localPath
// under the remote base name when localPath is a directory or ends in a
// separator.
func Get(ctx context.Context, rawURL, localPath string, cfg Config) (Result, error) {
	ep, err := ParseURL(rawURL)
	if err != nil {
		return Result{}, err
	}
	c, err := open(ep, cfg)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	return c.Download(ctx, ep.Path, localPath)
}

// Upload sends the local file to remotePath and returns once the remote
// file is complete and verified. A remotePath that is empty or ends in
// "/" names a directory: the file goes into it under localPath's base
// name. localPath must be a regular file (a fifo or device is refused with
// ErrNotRegular). The data goes to remotePath + Config.PartSuffix and is
// renamed into place after verification (unless Config.DirectUpload), so
// an existing remotePath is replaced atomically and never seen
// half-written. It runs on a pooled session (waiting for one when
// Config.MaxConns are in use) and dials, once per attempt at most, only
// when none is fit.
func (c *Client) Upload(ctx context.Context, localPath, remotePath string) (Result, error) {
	return c.upload(ctx, localPath, remotePath, callOpts{})
}

// minStateSize is the smallest upload (and download of a batch, whose
// listing gives the size) that keeps a state file for a later process: a
// smaller one that a crash interrupted is sent again whole (or resumed
// where a server-side hash proves its partial), which costs less than a
// state file's writes and syncs for every small file of a batch.
const minStateSize = 1 << 20

// callOpts overrides the Client's configuration for one call (a file of a
// batch).
type callOpts struct {
	// progress replaces Config.Progress when set.
	progress func(done, total int64)
	// segments replaces Config.Segments when non-zero.
	segments int
	// small reports a download known (from a listing) to be smaller than
	// minStateSize: it keeps no state file (see minStateSize).
	small bool
	// noSync skips a download's per-file fsync (the batch syncs at its
	// end).
	noSync bool
}

func (o callOpts) apply(e resume.Config) resume.Config {
	if o.progress != nil {
		e.Progress = o.progress
	}
	if o.segments != 0 {
		e.Segments = o.segments
	}
	e.NoSync = e.NoSync || o.noSync
	return e
}

func (c *Client) upload(ctx context.Context, localPath, remotePath string, o callOpts) (Result, error) {
	target, err := RemotePath(localPath, remotePath)
	if err != nil {
		return Result{}, &Error{Op: "upload", Path: remotePath, Err: err}
	}
	remotePath = target
	f, err := openSource(localPath)
	if err != nil {
		return Result{}, &Error{Op: "upload", Path: remotePath, Err: err}
	}
	defer f.Close()
	ecfg := o.apply(c.engine(remotePath))
	if !c.cfg.DirectUpload {
		ecfg.TempPath = remotePath + c.cfg.partSuffix()
	}
	// The state file records what the remote partial is known to hold, so
	// that a later run (after a crash) resumes only what it can prove.
	if fi, err := f.Stat(); err == nil && fi.Size() >= minStateSize {
		ecfg.StatePath = c.uploadStatePath(localPath, remotePath)
	}
	return c.transfer(ctx, "upload", remotePath, localPath, func(ctx context.Context, dial protocol.Dialer) (resume.Result, error) {
		return resume.Upload(ctx, dial, f, remotePath, ecfg)
	})
}

// Download fetches remotePath into localPath. A localPath that is a
// directory or ends in a separator means the remote base name inside it
// (see LocalPath). The data goes to localPath + Config.PartSuffix until it
// is complete and verified, then is renamed into place; an existing
// partial is resumed. Only a regular file is written or replaced: a
// target, partial or state file that exists as anything else (a device,
// fifo, socket, directory or symbolic link) fails with ErrNotRegular
// before any connection is made. Sessions as for Upload.
func (c *Client) Download(ctx context.Context, remotePath, localPath string) (Result, error) {
	return c.download(ctx, remotePath, localPath, callOpts{})
}

func (c *Client) download(ctx context.Context, remotePath, localPath string, o callOpts) (Result, error) {
	fail := func(err error) (Result, error) {
		return Result{}, &Error{Op: "download", Path: remotePath, Err: err}
	}
	if err := protocol.CheckPath(remotePath); err != nil {
		return fail(err)
	}
	localPath, err := LocalPath(localPath, remotePath)
	if err != nil {
		return fail(err)
	}
	part := localPath + c.cfg.partSuffix()
	state := part + ".state"
	// Never through a link planted at the partial's or the state's name,
	// and only into a regular file: checked before opening (opening a
	// device can have effects of its own), and again on the open file.
	for _, p := range []string{part, state} {
		if err := regularOrAbsent(p); err != nil {
			return fail(err)
		}
	}
	_, statErr := os.Lstat(part)
	created := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE|oNoFollow|oNonBlock, 0o644)
	if err != nil {
		return fail(err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = &fs.PathError{Op: "write", Path: part, Err: fmt.Errorf("%w (%s)", ErrNotRegular, describeMode(fi.Mode()))}
		}
		return fail(err)
	}
	ecfg := o.apply(c.engine(remotePath))
	if !o.small {
		ecfg.StatePath = state
	}
	res, err := c.transfer(ctx, "download", remotePath, localPath, func(ctx context.Context, dial protocol.Dialer) (resume.Result, error) {
		return resume.Download(ctx, dial, remotePath, f, ecfg)
	})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &Error{Op: "download", Path: remotePath, Committed: res.Size, Attempts: res.Attempts, Err: cerr}
	}
	if err != nil {
		// A partial this call created and never wrote to is not worth
		// keeping (a missing remote file, a rejected login).
		if fi, serr := os.Stat(part); created && serr == nil && fi.Size() == 0 {
			_ = os.Remove(part)
		}
		return res, err
	}
	// Whatever appeared at the target meanwhile, only a regular file is
	// replaced; the verified partial stays otherwise.
	err = regularOrAbsent(localPath)
	if err == nil {
		err = os.Rename(part, localPath)
	}
	if err != nil {
		return res, &Error{Op: "download", Path: remotePath, Committed: res.Size, Attempts: res.Attempts, Err: err}
	}
	return res, nil
}

// uploadStatePath names the state file of a segmented upload of localPath
// to remotePath on this server, or "" when there is no state directory.
func (c *Client) uploadStatePath(localPath, remotePath string) string {
	dir, err := c.stateDir()
	if err != nil {
		return ""
	}
	abs, err := filepath.Abs(localPath)
	if err != nil {
		return ""
	}
	key := sha256.Sum256([]byte(c.ep.Scheme + "\x00" + c.ep.User + "@" + c.ep.Addr() + "\x00" + remotePath + "\x00" + abs))
	return filepath.Join(dir, "upload-"+hex.EncodeToString(key[:12])+".json")
}

// stateDir returns Config.StateDir, or the user's cache directory's
// "haul", made (private) if missing.
func (c *Client) stateDir() (string, error) {
	dir := c.cfg.StateDir
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(cache, "haul")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// sameContent compares a remote file with a local one by a server-side
// hash (see resume.SameContent), on a pooled session.
func (c *Client) sameContent(ctx context.Context, remotePath, localPath string) (method string, same bool, err error) {
	f, err := openSource(localPath)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", false, err
	}
	err = c.remote(ctx, "hash", remotePath, func(ctx context.Context, s protocol.Session) error {
		var err error
		method, same, err = resume.SameContent(ctx, s, remotePath, f, fi.Size())
		return err
	})
	return method, same, err
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
		return nil, &URLError{URL: ep.String(), Err: errors.New("an sftp URL needs a user name (sftp://user@host/path)")}
	}
	if ep.password == "" && cfg.IdentityFile == "" && !cfg.UseAgent {
		// Caught here, before any connection, with the settings' names.
		return nil, &protocol.Error{Op: "login", Kind: protocol.ErrAuth,
			Err: errors.New("no password and no private key given for sftp://")}
	}
	opts := []psftp.Option{
		psftp.WithUser(ep.User),
		psftp.WithDialTimeout(cfg.dialTimeout()),
	}
	if ep.password != "" {
		opts = append(opts, psftp.WithPassword(ep.password))
	}
	if cfg.IdentityFile != "" {
		// Read now, so that a missing or unreadable key fails before
		// anything is sent, naming the setting.
		signer, err := readIdentity(expandHome(cfg.IdentityFile))
		if err != nil {
			return nil, err
		}
		opts = append(opts, psftp.WithSigner(signer))
	}
	if cfg.UseAgent {
		opts = append(opts, psftp.WithAgent())
	}
	switch {
	case cfg.InsecureIgnoreHostKey && cfg.AcceptNewHostKey:
		return nil, errors.New("Config.AcceptNewHostKey and InsecureIgnoreHostKey contradict each other")
	case cfg.InsecureIgnoreHostKey:
		opts = append(opts, psftp.WithInsecureIgnoreHostKey())
	case cfg.KnownHostsFile != "":
		opts = append(opts, psftp.WithKnownHostsFile(expandHome(cfg.KnownHostsFile)))
	}
	if cfg.AcceptNewHostKey {
		notify := cfg.OnNewHostKey
		opts = append(opts, psftp.WithAcceptNewHostKey(func(host string, key ssh.PublicKey) {
			if notify != nil {
				notify(host, key.Type()+" "+ssh.FingerprintSHA256(key))
			}
		}))
	}
	if ka := cfg.keepAlive(); ka > 0 {
		opts = append(opts, psftp.WithKeepAlive(ka))
	} else {
		opts = append(opts, psftp.WithKeepAlive(0)) // negative: off, as Config says
	}
	if cfg.NoExecHash {
		opts = append(opts, psftp.WithExecHash(false))
	}
	if cfg.Logger != nil {
		opts = append(opts, psftp.WithLogger(cfg.Logger))
	}
	return psftp.Dialer(ep.Addr(), opts...), nil
}

// readIdentity reads an unencrypted private key for SFTP.
func readIdentity(p string) (ssh.Signer, error) {
	pem, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var pass *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pass):
		return nil, fmt.Errorf("identity file %s: the key is encrypted with a passphrase, which haul cannot ask for: use a key without one, or the SSH agent (Config.UseAgent)", p)
	case err != nil:
		return nil, fmt.Errorf("identity file %s: %w", p, err)
	}
	return signer, nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return home + "/" + rest
		}
	}
	return p
}
