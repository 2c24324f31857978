package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// The error taxonomy shared by every protocol. Each error returned by a
// Session matches, through errors.Is, exactly one kind: one of the sentinels
// below, fs.ErrNotExist or fs.ErrPermission. An error matching none of them
// is of unknown kind and is not retried.
var (
	// ErrTransient marks a failure that a new attempt on a new connection
	// can get past: FTP 421/425/426/450, connection resets, broken pipes,
	// timeouts, an unexpected end of stream, a stalled transfer.
	ErrTransient = errors.New("transient failure")

	// ErrStorage marks a server that failed to store received data, with
	// no more precise reason (vsftpd's "451 Failure writing to local file",
	// which is all it says when its disk is full). It also matches
	// ErrTransient: the engine retries it, but gives up with ErrNoSpace when
	// it repeats without progress.
	ErrStorage error = &subKind{msg: "server failed to store data", parent: ErrTransient}
	// ErrTooManyConns marks a new connection the server refused for
	// having too many already (FTP 421 before the login completes, as
	// vsftpd's max_per_ip and max_clients answer). It is transient: a
	// client that keeps fewer connections open gets through.
	ErrTooManyConns error = &subKind{msg: "server refused the connection: too many connections", parent: ErrTransient}

	// ErrAuth marks a rejected login (FTP 530, SSH authentication
	// failure). It is never retried: servers lock accounts after a few
	// failed logins.
	ErrAuth = errors.New("authentication failed")

	// ErrNoSpace marks a remote (or local) file system that is full or
	// over quota (FTP 452/552, ENOSPC, a statvfs preflight). The partial
	// file is kept.
	ErrNoSpace = errors.New("no space left")

	// ErrResumeUnsupported marks a server that refused to start a transfer
	// at a non-zero offset (REST refused). The engine restarts from zero
	// once.
	ErrResumeUnsupported = errors.New("resume not supported by server")

	// ErrHostKey marks an SSH host key that is unknown or does not match
	// known_hosts, or a TLS certificate that does not verify.
	ErrHostKey = errors.New("server identity not verified")

	// ErrInvalidPath marks a path that cannot be sent safely (CR, LF or
	// NUL in it, or empty).
	ErrInvalidPath = errors.New("invalid path")

	// ErrUnsupported marks an operation the server or protocol cannot do.
	ErrUnsupported = errors.New("operation not supported")

	// ErrProtocol marks a server that broke the protocol: a reply no
	// correct server sends (a negative size, an oversized reply). It is
	// not retried: the same server would say the same.
	ErrProtocol = errors.New("protocol violation by the server")
)

// subKind is a kind that also matches a broader kind.
type subKind struct {
	msg    string
	parent error
}

func (k *subKind) Error() string { return k.msg }

// Is reports whether target is the broader kind.
func (k *subKind) Is(target error) bool { return target == k.parent }

var (
	errEmptyPath = errors.New("empty path")
	errBadChar   = errors.New("path contains CR, LF or NUL")
)

// Error describes a failed protocol operation. Kind is the classification
// (one of the sentinels above, fs.ErrNotExist or fs.ErrPermission, or nil
// for unknown); Err is the underlying cause. errors.Is matches both.
type Error struct {
	// Op is the operation: "dial", "login", "stat", "read", "write",
	// "rename", "remove", "hash", ...
	Op string
	// Path is the remote path concerned, if any.
	Path string
	// Code is the protocol's status code when there is one (an FTP reply
	// code, an SFTP status code), else 0.
	Code int
	// Kind is the classification.
	Kind error
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Path != "" {
		fmt.Fprintf(&b, " %q", e.Path)
	}
	if e.Kind != nil {
		b.WriteString(": ")
		b.WriteString(e.Kind.Error())
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the kind and the cause, so errors.Is and errors.As see both.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Wrap returns an *Error for op and path, classifying err with Classify
// when kind is nil. A nil err yields nil. An err that already is an *Error
// keeps its own classification and gains op/path only if it had none.
func Wrap(op, path string, kind, err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if kind == nil && errors.As(err, &pe) {
		return err
	}
	if kind == nil {
		kind = Classify(err)
	}
	return &Error{Op: op, Path: path, Kind: kind, Err: err}
}

// Classify returns the kind of a transport-level error that carries no
// protocol status: context cancellation yields nil (not retried), network
// errors, resets, broken pipes, timeouts and unexpected EOFs yield
// ErrTransient, ENOSPC/EDQUOT yield ErrNoSpace, and errors already matching
// a kind keep it. Protocol packages classify their status codes themselves
// and fall back to Classify for everything else.
func Classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil
	}
	for _, k := range []error{ErrStorage, ErrTooManyConns, ErrAuth, ErrNoSpace, ErrResumeUnsupported, ErrHostKey,
		ErrInvalidPath, ErrUnsupported, ErrProtocol, fs.ErrNotExist, fs.ErrPermission, ErrTransient} {
		if errors.Is(err, k) {
			return k
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ErrNoSpace
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.ErrClosedPipe), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, os.ErrDeadlineExceeded):
		return ErrTransient
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ErrTransient
	}
	return nil
}

// IsRetryable reports whether a new attempt on a new connection may get
// past err: true only for ErrTransient.
func IsRetryable(err error) bool { return errors.Is(err, ErrTransient) }

// MaxServerText is how many bytes of a server's text ServerText keeps.
const MaxServerText = 400

// ServerText returns text that a server sent (a reply, a status message, a
// greeting, command output) fit to be put into an error or a log: each
// non-empty secret replaced by "****" (a server may echo the password it
// was given), characters that are not printable other than newline and tab
// (terminal escapes, invalid UTF-8) written as \xNN or \uNNNN, and the
// result cut to MaxServerText bytes with a note of how many were left out.
func ServerText(text string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, "****")
		}
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		piece := text[i : i+n]
		switch {
		case r == utf8.RuneError && n <= 1:
			piece = fmt.Sprintf(`\x%02x`, text[i])
		case r == '\n' || r == '\t' || unicode.IsPrint(r):
		case r < 0x100:
			piece = fmt.Sprintf(`\x%02x`, r)
		default:
			piece = fmt.Sprintf(`\u%04x`, r)
		}
		if b.Len()+len(piece) > MaxServerText {
			fmt.Fprintf(&b, "... (%d more bytes)", len(text)-i)
			break
		}
		b.WriteString(piece)
		i += n
	}
	return b.String()
}

// HostNotFound reports a host name that DNS says does not exist: no new
// attempt can succeed, unlike a refused connection (the server may be
// restarting) or a DNS server that failed or timed out. Protocols classify
// it fs.ErrNotExist, the kind of a name that names nothing: permanent, and
// "not found" to the user.
func HostNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// HostError wraps err, for which HostNotFound holds, so that its text
// names the host plainly.
func HostError(err error) error { return &hostError{err: err} }

type hostError struct{ err error }

func (e *hostError) Error() string {
	var de *net.DNSError
	if !errors.As(e.err, &de) {
		return e.err.Error()
	}
	return fmt.Sprintf("no host named %q (DNS: %s)", de.Name, de.Err)
}

func (e *hostError) Unwrap() error { return e.err }

// ParentDir returns the parent of a remote path, or "" when that is the
// login directory or the root (which exist).
func ParentDir(path string) string {
	p := strings.TrimRight(path, "/")
	i := strings.LastIndex(p, "/")
	if i < 0 {
		return ""
	}
	p = strings.TrimRight(p[:i], "/")
	if p == "" || p == "." {
		return ""
	}
	return p
}
