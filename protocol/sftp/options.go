package sftp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults applied by Dial when the corresponding option is not given.
const (
	// DefaultKeepAlive is the interval between keepalive@openssh.com
	// requests. A connection from which nothing arrives for about three
	// intervals is closed, so blocked calls fail.
	DefaultKeepAlive = 15 * time.Second
	// DefaultConcurrency is the number of SFTP requests kept in flight per
	// file for reads and writes, with DefaultPacketSize.
	DefaultConcurrency = 64
	// DefaultPacketSize is the payload size of one SFTP read or write
	// request: 32 KiB, the size every server must accept. When the server
	// answers limits@openssh.com (recent OpenSSH) and WithPacketSize is not
	// given, Dial uses the largest request size the server serves, up to
	// MaxPacketSize, and, unless WithConcurrency is given, as many
	// requests as keep about 4 MiB (twice the SSH channel window) in flight:
	// fewer, larger requests cost both ends less CPU.
	DefaultPacketSize = 32 * 1024
	// MaxPacketSize is the largest request payload: 255 KiB, what
	// OpenSSH's sftp-server and proftpd's mod_sftp serve (OpenSSH answers
	// larger reads short, proftpd drops the connection).
	MaxPacketSize = 255 * 1024
	// DefaultDialTimeout bounds the TCP dial, the SSH handshake,
	// authentication and the SFTP version exchange together.
	DefaultDialTimeout = 30 * time.Second
	// DefaultPort is used when the address passed to Dial has no port.
	DefaultPort = "22"
)

// Option configures Dial. Options validate their input: an invalid value
// makes Dial fail before anything is sent.
type Option func(*options) error

type options struct {
	user        string
	password    string
	hasPassword bool
	signers     []ssh.Signer
	agent       bool
	knownHosts  string
	insecure    bool
	keepAlive   time.Duration
	concurrency int
	packetSize  int
	// Whether WithConcurrency and WithPacketSize were given (else the
	// server's limits may raise the defaults).
	concurrencySet bool
	packetSizeSet  bool
	dialTimeout    time.Duration
	logger         *slog.Logger
	noSpaceMargin  int64
	// noSpaceMarginSet: WithNoSpaceMargin was given.
	noSpaceMarginSet bool
	execHash         bool

	// acceptNew: WithAcceptNewHostKey was given; onNewHostKey is its
	// callback (may be nil).
	acceptNew    bool
	onNewHostKey func(host string, key ssh.PublicKey)
}

func defaultOptions() options {
	return options{
		keepAlive:   DefaultKeepAlive,
		concurrency: DefaultConcurrency,
		packetSize:  DefaultPacketSize,
		dialTimeout: DefaultDialTimeout,
		execHash:    true,
	}
}

// apply runs opts over the defaults and fills in what remains unset.
func applyOptions(opts []Option) (options, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	if o.user == "" {
		if u, err := user.Current(); err == nil {
			o.user = u.Username
		}
	}
	if o.user == "" {
		return o, errors.New("sftp: no user name: use WithUser")
	}
	if !o.hasPassword && len(o.signers) == 0 && !o.agent {
		return o, errors.New("sftp: no authentication method: use WithPassword, WithPrivateKeyFile, WithSigner or WithAgent")
	}
	if o.insecure && o.acceptNew {
		return o, errors.New("sftp: WithAcceptNewHostKey and WithInsecureIgnoreHostKey contradict each other")
	}
	if !o.insecure && o.knownHosts == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return o, fmt.Errorf("sftp: no known_hosts file: %w (use WithKnownHostsFile)", err)
		}
		o.knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.noSpaceMargin == 0 {
		o.noSpaceMargin = defaultNoSpaceMargin(o.concurrency, o.packetSize)
	}
	return o, nil
}

// defaultNoSpaceMargin is the free space under which a generic write
// failure is reported as "no space": the bytes a full window of in-flight
// writes carries, and at least 1 MiB.
func defaultNoSpaceMargin(concurrency, packet int) int64 {
	m := int64(concurrency) * int64(packet)
	if m < 1<<20 {
		m = 1 << 20
	}
	return m
}

// WithUser sets the SSH user name. Default: the current OS user.
func WithUser(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("sftp: WithUser: empty user name")
		}
		o.user = name
		return nil
	}
}

// WithPassword enables password authentication with pw. It is tried after
// public keys. The password is never logged, and where the server repeats
// it (a status message, a command's output) in an error or a log, it is
// replaced by "****".
func WithPassword(pw string) Option {
	return func(o *options) error {
		o.password = pw
		o.hasPassword = true
		return nil
	}
}

// WithPrivateKeyFile reads an unencrypted private key (OpenSSH, PKCS#1,
// PKCS#8 or EC PEM) from path and enables public-key authentication with
// it. For an encrypted key, parse it yourself and use WithSigner.
func WithPrivateKeyFile(path string) Option {
	return func(o *options) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("sftp: WithPrivateKeyFile: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return fmt.Errorf("sftp: WithPrivateKeyFile %s: %w", path, err)
		}
		o.signers = append(o.signers, signer)
		return nil
	}
}

// WithSigner enables public-key authentication with signer. Several
// signers (and WithPrivateKeyFile, WithAgent) combine into one publickey
// method, tried in the order given.
func WithSigner(signer ssh.Signer) Option {
	return func(o *options) error {
		if signer == nil {
			return errors.New("sftp: WithSigner: nil signer")
		}
		o.signers = append(o.signers, signer)
		return nil
	}
}

// WithAgent enables public-key authentication with the keys of the SSH
// agent listening on $SSH_AUTH_SOCK. The agent is contacted during Dial
// only.
func WithAgent() Option {
	return func(o *options) error {
		if os.Getenv("SSH_AUTH_SOCK") == "" {
			return errors.New("sftp: WithAgent: SSH_AUTH_SOCK is not set")
		}
		o.agent = true
		return nil
	}
}

// WithKnownHostsFile sets the known_hosts file the server's host key is
// checked against. Default: ~/.ssh/known_hosts. An unknown or mismatching
// host key is an error matching protocol.ErrHostKey.
func WithKnownHostsFile(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("sftp: WithKnownHostsFile: empty path")
		}
		o.knownHosts = path
		return nil
	}
}

// WithInsecureIgnoreHostKey accepts any host key. It makes the connection
// open to man-in-the-middle attacks; use it only for tests. Default: off.
func WithInsecureIgnoreHostKey() Option {
	return func(o *options) error {
		o.insecure = true
		return nil
	}
}

// WithAcceptNewHostKey records the host key of a server that the
// known_hosts file (see WithKnownHostsFile) does not know, as OpenSSH's
// StrictHostKeyChecking=accept-new does: when the file has no line for the
// host and port (or there is no file: it is then created with mode 0600,
// its directory with 0700), the key the server presents is trusted and
// appended as a line naming "host" (port 22) or "[host]:port", and
// recorded, when not nil, is called once with that name and the key. A key
// that differs from one recorded for the host is still refused with
// protocol.ErrHostKey, naming both fingerprints, and the file is left as
// it was. The first connection is trusted blindly: use this where it is
// known to reach the right server.
//
// Dials of one process that meet the same new host at once (the segments
// of a transfer) append one line between them: appends are serialized,
// and the file is read again before each, so a line another dial or
// another process recorded meanwhile is used, not written twice. A
// failure to write the file is an error matching protocol.ErrHostKey.
// It cannot be combined with WithInsecureIgnoreHostKey. Default: off (an
// unknown host is refused).
func WithAcceptNewHostKey(recorded func(host string, key ssh.PublicKey)) Option {
	return func(o *options) error {
		o.acceptNew = true
		o.onNewHostKey = recorded
		return nil
	}
}

// WithKeepAlive sets the interval between keepalive@openssh.com requests
// (want-reply). When, after a request, neither its reply nor any other
// byte has come from the server for 2.5 intervals, the connection is
// closed so that every blocked call fails with a transient error. Zero
// disables keepalives. Default: DefaultKeepAlive (15 s).
func WithKeepAlive(interval time.Duration) Option {
	return func(o *options) error {
		if interval < 0 {
			return fmt.Errorf("sftp: WithKeepAlive: negative interval %v", interval)
		}
		o.keepAlive = interval
		return nil
	}
}

// WithConcurrency sets how many read or write requests are kept in flight
// per file. 1 makes transfers sequential. Default: DefaultConcurrency
// (64), or fewer when the packet size is raised to the server's limits
// (see DefaultPacketSize).
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 || n > 1024 {
			return fmt.Errorf("sftp: WithConcurrency: %d not in [1, 1024]", n)
		}
		o.concurrency = n
		o.concurrencySet = true
		return nil
	}
}

// WithPacketSize sets the payload size of one read or write request, in
// [512, MaxPacketSize]. Sizes above 32 KiB are not accepted by every
// server; when the server states its limits (limits@openssh.com), a
// larger size is lowered to them. Default: DefaultPacketSize (32 KiB), or
// the server's limits when it states them.
func WithPacketSize(n int) Option {
	return func(o *options) error {
		if n < 512 || n > MaxPacketSize {
			return fmt.Errorf("sftp: WithPacketSize: %d not in [512, %d]", n, MaxPacketSize)
		}
		o.packetSize = n
		o.packetSizeSet = true
		return nil
	}
}

// WithDialTimeout bounds the TCP dial, SSH handshake, authentication and
// SFTP initialisation together (the context passed to Dial bounds them
// too). Default: DefaultDialTimeout (30 s).
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("sftp: WithDialTimeout: %v is not positive", d)
		}
		o.dialTimeout = d
		return nil
	}
}

// WithLogger sets the logger for connection events (dial, host key,
// keepalive failures). Passwords are never logged. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		o.logger = l
		return nil
	}
}

// WithNoSpaceMargin sets the free space, in bytes, under which a generic
// SSH_FX_FAILURE on write is reported as protocol.ErrNoSpace (OpenSSH
// answers ENOSPC that way). Default: the bytes of one window of in-flight
// writes (concurrency × packet size), at least 1 MiB.
func WithNoSpaceMargin(bytes int64) Option {
	return func(o *options) error {
		if bytes <= 0 {
			return fmt.Errorf("sftp: WithNoSpaceMargin: %d is not positive", bytes)
		}
		o.noSpaceMargin = bytes
		o.noSpaceMarginSet = true
		return nil
	}
}

// WithExecHash allows (on) or forbids (off) hashing a remote file by
// running a command on the server over SSH exec (sha256sum, sha512sum,
// sha1sum or md5sum, with head and tail for byte ranges, through the
// user's login shell, with the path single-quoted) when the server has no
// check-file extension. The commands run once per session to probe (for
// the tools, in the shell's startup directory) and once per hash; servers
// that refuse exec or force internal-sftp, or whose probe does not answer
// within 5 s (or half of WithDialTimeout), simply offer no hash. A command
// whose output passes 16 KiB is stopped and fails. Default: on.
func WithExecHash(on bool) Option {
	return func(o *options) error {
		o.execHash = on
		return nil
	}
}

// normalizeAddr adds DefaultPort to an address without a port.
func normalizeAddr(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("sftp: empty address")
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr, nil
	}
	return net.JoinHostPort(addr, DefaultPort), nil
}
