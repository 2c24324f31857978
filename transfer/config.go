package transfer

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/openhaul/haul/resume"
)

// Defaults applied by Config for its zero-valued fields.
const (
	// DefaultKeepAlive is the TCP keepalive idle time and probe interval on
	// every FTP socket, and the SSH keepalive interval for SFTP.
	DefaultKeepAlive = 15 * time.Second
	// DefaultDialTimeout bounds connecting and logging in.
	DefaultDialTimeout = 30 * time.Second
	// DefaultPartSuffix is appended to a download's local name while it is
	// incomplete.
	DefaultPartSuffix = ".part"
	// MaxSegments caps Config.Segments (see resume.MaxSegments for why).
	MaxSegments = resume.MaxSegments
	// DefaultMaxConns caps the sessions a Client holds at once. Four
	// keeps a link busy with several files in flight (each file's round
	// trips overlap the others' data), matches the streams of an
	// automatically segmented transfer, and stays below the limits
	// servers set per client address: OpenSSH refuses unauthenticated
	// connections past MaxStartups 10, and vsftpd's max_per_ip or
	// pure-ftpd's per-address limit are often set to a handful.
	DefaultMaxConns = 4
	// DefaultIdleTimeout is how long a Client keeps a session nobody
	// uses. One minute is well below the idle timeouts servers apply
	// (vsftpd's idle_session_timeout 300 s, proftpd's TimeoutIdle 600 s,
	// pure-ftpd's 15 minutes), so a pooled session is closed by haul
	// rather than found dead, and long enough to carry a caller's next
	// file or batch.
	DefaultIdleTimeout = 60 * time.Second
)

// Config configures a Client. The zero value is ready to use: every zero
// field means the documented default, and everything secure is on.
type Config struct {
	// User is the login name used when the URL names none. Empty means
	// "anonymous" for FTP; SFTP then fails with ErrInvalidURL.
	User string
	// Password is used when the URL carries none. Passwords never appear
	// in logs, errors or results.
	Password string

	// IdentityFile is a private key for SFTP public-key login.
	IdentityFile string
	// UseAgent enables SFTP login through the agent at SSH_AUTH_SOCK.
	UseAgent bool
	// KnownHostsFile is checked for the SFTP server's host key. Empty
	// means ~/.ssh/known_hosts. An unknown or changed key is refused.
	KnownHostsFile string
	// InsecureIgnoreHostKey accepts any SFTP host key. Never set it
	// outside tests.
	InsecureIgnoreHostKey bool
	// AcceptNewHostKey trusts and records the host key of an SFTP server
	// that KnownHostsFile does not know yet, as OpenSSH's
	// StrictHostKeyChecking=accept-new does: when the file has no line
	// for the URL's host and port (or does not exist: it is created with
	// mode 0600, its directory with 0700), the key is appended as a line
	// naming "host" (port 22) or "[host]:port", and OnNewHostKey is
	// called. A key that differs from one recorded is still refused with
	// ErrHostKey and the file is left alone. The first connection is
	// trusted blindly: set it only where that connection is known to
	// reach the right server. Open fails when InsecureIgnoreHostKey is
	// set too.
	AcceptNewHostKey bool
	// OnNewHostKey, with AcceptNewHostKey, is called once per recorded
	// key (the segments of a transfer record one line between them) with
	// the name it was recorded under ("[host]:port") and the key's type
	// and SHA256 fingerprint ("ssh-ed25519 SHA256:..."), so that the user
	// can be told. It must return quickly.
	OnNewHostKey func(host, fingerprint string)

	// NoExecHash stops haul from running a hash command (sha256sum...)
	// over SSH exec to verify SFTP transfers on servers without the
	// check-file extension (OpenSSH); verification then falls back to
	// sizes there.
	NoExecHash bool

	// TLSConfig is the base TLS configuration for FTPS. Nil means the
	// system roots with the URL's host as server name; certificates are
	// always verified unless the caller's TLSConfig says otherwise.
	TLSConfig *tls.Config

	// KeepAlive is the TCP keepalive idle time and probe interval (FTP)
	// or the SSH keepalive interval (SFTP). Zero means DefaultKeepAlive;
	// negative disables it.
	KeepAlive time.Duration
	// DialTimeout bounds connecting and logging in. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration

	// MaxConns caps the logged-in sessions a Client holds at once, in
	// use or idle: a call (an Upload, a Stat...) that finds them all in
	// use waits for one, and holds one until it returns. A segmented
	// transfer (Segments) is the one exception: once its first session
	// runs, its other ranges take sessions without waiting, beyond
	// MaxConns when none is free (a range waiting while its transfer
	// holds sessions could wait for ever), and a session beyond
	// MaxConns is closed, not pooled, when its range ends. Zero means
	// DefaultMaxConns; negative is refused by Open.
	MaxConns int
	// IdleTimeout closes a pooled session unused for this long. Zero
	// means DefaultIdleTimeout; negative keeps no idle session (each is
	// closed when the call that used it returns).
	IdleTimeout time.Duration

	// MaxAttempts is the number of attempts in a row without progress
	// before giving up. Zero means resume.DefaultMaxAttempts.
	MaxAttempts int
	// StallTimeout aborts and resumes an attempt that moved no byte for
	// this long. Zero means resume.DefaultStallTimeout; negative disables.
	StallTimeout time.Duration
	// InitialBackoff and MaxBackoff bound the wait between attempts. Zero
	// means resume.DefaultInitialBackoff and resume.DefaultMaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration

	// PartSuffix is appended to the destination's name while a transfer
	// is incomplete: an upload goes to "<remote>.part" on the server and
	// is renamed into place, replacing any existing file, only after it
	// verified; a download goes to "<local>.part". An interrupted transfer
	// resumes that file. Empty means DefaultPartSuffix.
	PartSuffix string
	// DirectUpload writes uploads straight to the remote path, without
	// the temporary name and the rename (for servers that forbid renames).
	DirectUpload bool

	// Verify says how a finished transfer is proven identical: the zero
	// value (auto) compares a server-side hash where the server offers one
	// (FTP HASH/XSHA256, SFTP check-file) and sizes otherwise.
	Verify resume.VerifyPolicy
	// Overlap is how many bytes before a resume point are compared with
	// the source before appending. Zero means resume.DefaultOverlap
	// (64 KiB); negative disables the check.
	Overlap int64

	// Segments is how many connections a transfer uses at once, each
	// moving its own byte range and resuming it on its own: downloads on
	// every protocol; uploads over SFTP, and over FTP when a probe shows
	// the server writes past the end of a file and lets several
	// connections write one file (vsftpd with lock_upload_files=NO), else
	// the upload falls back to one stream. A download keeps the ranges'
	// state in "<local>.part.state", an upload in StateDir, until the
	// file verified.
	// Zero means auto: one stream, unless the server's round trip is at
	// least 10 ms and the file holds several MinSegmentSize ranges, then
	// up to 4 (FTP uploads: one, unless asked). One disables segmenting.
	// More than MaxSegments means MaxSegments.
	Segments int
	// StateDir holds the state files of uploads: what the remote partial
	// is known to hold and the source's size and modification time, so a
	// later run (after a crash) resumes only what it can prove (a
	// download keeps its state beside the local partial, in
	// "<local>.part.state"). Empty means the user's cache directory
	// (os.UserCacheDir()/haul); if there is none, uploads use one stream,
	// and a later run rewrites a remote partial that no server-side hash
	// proves.
	StateDir string
	// MinSegmentSize is the smallest range worth its own connection. Zero
	// means resume.DefaultMinSegmentSize (32 MiB).
	MinSegmentSize int64
	// RateLimit caps the Client's throughput in bytes per second: all its
	// transfers and their connections together (the workers of a batch
	// share it). Zero means no limit.
	RateLimit int64

	// Logger receives structured logs. Nil means none.
	Logger *slog.Logger
	// Progress is called with the bytes at the destination and the total
	// after every chunk. It must return quickly.
	Progress func(done, total int64)
	// OnEvent is called for every attempt, failure, backoff, restart and
	// verification. It must return quickly.
	OnEvent func(Event)
}

func (c Config) keepAlive() time.Duration {
	if c.KeepAlive == 0 {
		return DefaultKeepAlive
	}
	return c.KeepAlive
}

func (c Config) dialTimeout() time.Duration {
	if c.DialTimeout <= 0 {
		return DefaultDialTimeout
	}
	return c.DialTimeout
}

func (c Config) maxConns() int {
	if c.MaxConns <= 0 {
		return DefaultMaxConns
	}
	return c.MaxConns
}

func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout == 0 {
		return DefaultIdleTimeout
	}
	return c.IdleTimeout
}

// validate refuses settings that mean nothing.
func (c Config) validate() error {
	if c.MaxConns < 0 {
		return fmt.Errorf("Config.MaxConns is %d: want 0 (the default, %d) or more", c.MaxConns, DefaultMaxConns)
	}
	return nil
}

func (c Config) partSuffix() string {
	if c.PartSuffix == "" {
		return DefaultPartSuffix
	}
	return c.PartSuffix
}

// engine returns the engine's configuration for a transfer of the remote
// file path (named in its events).
func (c Config) engine(path string) resume.Config {
	var onEvent func(resume.Event)
	if c.OnEvent != nil {
		onEvent = func(e resume.Event) { c.OnEvent(eventOf(path, e)) }
	}
	return resume.Config{
		MaxAttempts:    c.MaxAttempts,
		StallTimeout:   c.StallTimeout,
		InitialBackoff: c.InitialBackoff,
		MaxBackoff:     c.MaxBackoff,
		Verify:         c.Verify,
		Segments:       c.Segments,
		MinSegmentSize: c.MinSegmentSize,
		RateLimit:      c.RateLimit,
		Overlap:        c.Overlap,
		Logger:         c.Logger,
		Progress:       c.Progress,
		OnEvent:        onEvent,
	}
}
