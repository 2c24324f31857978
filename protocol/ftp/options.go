package ftp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Default values used by Dial when the corresponding option is not given.
const (
	// DefaultUser and DefaultPassword are the anonymous credentials used
	// when WithCredentials is not given.
	DefaultUser     = "anonymous"
	DefaultPassword = "anonymous@"

	// DefaultDialTimeout bounds each TCP connect, and the greeting, TLS
	// handshake and login that follow the control connection's connect.
	DefaultDialTimeout = 30 * time.Second

	// DefaultShutTimeout bounds the wait for the server's final reply
	// (226, 426, ...) once a data connection has been closed.
	DefaultShutTimeout = 60 * time.Second

	// quitTimeout bounds the best-effort QUIT sent by Close.
	quitTimeout = 2 * time.Second
)

// DefaultKeepAlive is the TCP keepalive configuration applied to the control
// and data sockets when WithKeepAlive is not given: probes after 15 s of
// silence, every 15 s, and the connection is dropped after 4 unanswered
// probes (about 75 s after the peer vanished).
var DefaultKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 4}

// Option configures Dial. Options validate their input and return an error
// that Dial reports before connecting.
type Option func(*options) error

type tlsMode int

const (
	tlsNone tlsMode = iota
	tlsExplicit
	tlsImplicit
)

type options struct {
	user, password string
	tlsMode        tlsMode
	tlsConfig      *tls.Config
	tlsSet         int // number of TLS options given; more than one is an error
	keepAlive      net.KeepAliveConfig
	dialTimeout    time.Duration
	shutTimeout    time.Duration
	disableEPSV    bool
	logger         *slog.Logger
}

func defaultOptions() options {
	return options{
		user:        DefaultUser,
		password:    DefaultPassword,
		keepAlive:   DefaultKeepAlive,
		dialTimeout: DefaultDialTimeout,
		shutTimeout: DefaultShutTimeout,
	}
}

var errOptionValue = errors.New("invalid option value")

func optErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errOptionValue, fmt.Sprintf(format, args...))
}

// WithCredentials sets the user name and password sent with USER and PASS.
// The default is the anonymous login (DefaultUser, DefaultPassword). The
// user must not be empty; neither may contain CR, LF or NUL. The password is
// never logged nor included in errors, and where the server repeats it in a
// reply that an error or a log shows, it is replaced by "****".
func WithCredentials(user, password string) Option {
	return func(o *options) error {
		if user == "" {
			return optErr("empty user name")
		}
		if strings.ContainsAny(user, "\r\n\x00") || strings.ContainsAny(password, "\r\n\x00") {
			return optErr("user name or password contains CR, LF or NUL")
		}
		o.user, o.password = user, password
		return nil
	}
}

// WithExplicitTLS turns on explicit FTPS (AUTH TLS on the control
// connection, then PBSZ 0 / PROT P so data connections are encrypted too).
// cfg is cloned; a nil cfg means a zero tls.Config (system roots, full
// verification). When cfg has no ServerName, the host part of the dial
// address is used, and when it has no ClientSessionCache a fresh LRU cache
// is added, so data connections resume the control connection's TLS
// session as vsftpd's require_ssl_reuse demands. Default: no TLS.
func WithExplicitTLS(cfg *tls.Config) Option {
	return func(o *options) error {
		o.tlsMode, o.tlsConfig = tlsExplicit, cfg
		o.tlsSet++
		return nil
	}
}

// WithImplicitTLS turns on implicit FTPS: every connection, control and
// data, is TLS from its first byte (usually port 990). cfg is handled as in
// WithExplicitTLS. Default: no TLS.
func WithImplicitTLS(cfg *tls.Config) Option {
	return func(o *options) error {
		o.tlsMode, o.tlsConfig = tlsImplicit, cfg
		o.tlsSet++
		return nil
	}
}

// WithKeepAlive sets the TCP keepalive configuration of the control and
// data sockets. Default: DefaultKeepAlive. Zero fields take Go's defaults
// and negative fields leave the system's setting, as in net.KeepAliveConfig;
// Enable false turns keepalive off.
func WithKeepAlive(cfg net.KeepAliveConfig) Option {
	return func(o *options) error {
		o.keepAlive = cfg
		return nil
	}
}

// WithDialTimeout bounds each TCP connect and, for the control connection,
// the greeting, TLS handshake and login. It must be positive. Default:
// DefaultDialTimeout. The context given to Dial can only shorten it.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return optErr("dial timeout %v is not positive", d)
		}
		o.dialTimeout = d
		return nil
	}
}

// WithShutTimeout bounds the wait for the final reply of a transfer after
// its data connection was closed. Zero means no bound other than the
// context; negative values are rejected. Default: DefaultShutTimeout.
func WithShutTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return optErr("shut timeout %v is negative", d)
		}
		o.shutTimeout = d
		return nil
	}
}

// WithDisableEPSV makes data connections use PASV only. By default EPSV is
// tried first and, after one failure, PASV is used for the rest of the
// session. In both cases the data connection goes to the control
// connection's host; only the port named by the server is used.
func WithDisableEPSV() Option {
	return func(o *options) error {
		o.disableEPSV = true
		return nil
	}
}

// WithLogger sets the logger. At debug level every command sent and reply
// received on the control connection is logged, with the argument of PASS
// (and ACCT) replaced by "****". Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		o.logger = l
		return nil
	}
}
