package sftp

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SFTP status codes (draft-ietf-secsh-filexfer) that pkg/sftp does not
// export as constants.
const (
	fxNoSuchFile       = 2
	fxPermissionDenied = 3
	fxFailure          = 4
	fxNoConnection     = 6
	fxConnectionLost   = 7
	fxOpUnsupported    = 8
	fxNoSpaceOnFS      = 14
	fxQuotaExceeded    = 15
)

// HostKeyError reports a server host key that is not in known_hosts, or
// that differs from the key recorded there. It matches protocol.ErrHostKey
// through the *protocol.Error that wraps it.
type HostKeyError struct {
	// Host is the host name as looked up in known_hosts ("[host]:port").
	Host string
	// Received is the SHA256 fingerprint of the key the server presented,
	// prefixed with its type.
	Received string
	// Expected lists the keys known_hosts holds for Host, each as
	// "type SHA256:... (file:line)". Empty when the host is unknown.
	Expected []string
	// Revoked is true when the presented key is marked @revoked.
	Revoked bool
	// Err is the error from the known_hosts callback.
	Err error
}

func (e *HostKeyError) Error() string {
	switch {
	case e.Revoked:
		return fmt.Sprintf("host key for %s is revoked: received %s", e.Host, e.Received)
	case len(e.Expected) == 0:
		return fmt.Sprintf("host key for %s is unknown (not in known_hosts): received %s", e.Host, e.Received)
	default:
		return fmt.Sprintf("HOST KEY MISMATCH for %s (possible man-in-the-middle): received %s, expected %s",
			e.Host, e.Received, strings.Join(e.Expected, " or "))
	}
}

// Unwrap returns the known_hosts callback error.
func (e *HostKeyError) Unwrap() error { return e.Err }

// newHostKeyError builds a HostKeyError from a knownhosts callback error,
// or returns nil when err is not about the key itself.
func newHostKeyError(host string, key ssh.PublicKey, err error) *HostKeyError {
	he := &HostKeyError{Host: host, Received: key.Type() + " " + ssh.FingerprintSHA256(key), Err: err}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke):
		for _, k := range ke.Want {
			he.Expected = append(he.Expected, fmt.Sprintf("%s %s (%s:%d)",
				k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.Filename, k.Line))
		}
	case errors.As(err, &re):
		he.Revoked = true
	default:
		return nil
	}
	return he
}

// authError marks a handshake that failed after the server rejected our
// authentication attempts. Its kind is protocol.ErrAuth.
type authError struct {
	user  string
	tried []string
	err   error
}

func (e *authError) Error() string {
	return fmt.Sprintf("user %q rejected (methods tried: %s): %v", e.user, strings.Join(e.tried, ", "), e.err)
}

func (e *authError) Unwrap() error { return e.err }

// classify is the one place that maps an error to its kind. It returns an
// *protocol.Error for op and path, or nil for a nil err. The SFTP status
// code, when there is one, goes into Code. The text of err, which may quote
// the server (status messages, disconnect reasons, command output), is
// shown as protocol.ServerText makes it, with secret (the password) taken
// out.
func classify(op, path string, err error, secret string) error {
	if err == nil {
		return nil
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return err
	}
	code, kind := kindOf(err)
	if protocol.HostNotFound(err) {
		err = protocol.HostError(err)
	}
	return shown(&protocol.Error{Op: op, Path: path, Code: code, Kind: kind, Err: err}, secret)
}

// shown returns pe with the text of its cause shown as protocol.ServerText
// makes it; errors.Is and errors.As still see the cause.
func shown(pe *protocol.Error, secret string) *protocol.Error {
	if pe.Err == nil {
		return pe
	}
	if _, done := pe.Err.(*shownError); done {
		return pe
	}
	raw := pe.Err.Error()
	if text := protocol.ServerText(raw, secret); text != raw {
		pe.Err = &shownError{err: pe.Err, text: text}
	}
	return pe
}

// shownError shows the text of an error that quotes the server as
// protocol.ServerText makes it.
type shownError struct {
	err  error
	text string
}

func (e *shownError) Error() string { return e.text }
func (e *shownError) Unwrap() error { return e.err }

// protocolError reports what no correct server sends. It matches
// protocol.ErrProtocol.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

// Is makes a protocolError match protocol.ErrProtocol.
func (e *protocolError) Is(target error) bool { return target == protocol.ErrProtocol }

// checkSize rejects a file size no server may report: pkg/sftp turns the
// protocol's unsigned size into an int64, so a size of 2^63 or more comes
// out negative.
func checkSize(size int64) error {
	if size < 0 {
		return &protocolError{msg: fmt.Sprintf("sftp: the server reported a file size of %d bytes", uint64(size))}
	}
	return nil
}

// kindOf returns the SFTP status code carried by err (0 if none) and its
// kind.
func kindOf(err error) (int, error) {
	switch {
	case errors.Is(err, protocol.ErrProtocol):
		// protocol.Classify does not know this kind.
		return 0, protocol.ErrProtocol
	case protocol.HostNotFound(err):
		return 0, fs.ErrNotExist
	}
	var he *HostKeyError
	if errors.As(err, &he) {
		return 0, protocol.ErrHostKey
	}
	var ae *authError
	if errors.As(err, &ae) {
		return 0, protocol.ErrAuth
	}
	var se *sftp.StatusError
	if errors.As(err, &se) {
		return int(se.Code), statusKind(se.Code)
	}
	var fe *fxStatusError
	if errors.As(err, &fe) {
		return int(fe.Code), statusKind(fe.Code)
	}
	// pkg/sftp hands out bare fxerr values for a lost connection, and
	// io.EOF / os.ErrNotExist / os.ErrPermission after normalising
	// statuses; protocol.Classify maps those.
	switch {
	case errors.Is(err, sftp.ErrSSHFxConnectionLost), errors.Is(err, sftp.ErrSSHFxNoConnection):
		return fxConnectionLost, protocol.ErrTransient
	case errors.Is(err, sftp.ErrSSHFxOpUnsupported):
		return fxOpUnsupported, protocol.ErrUnsupported
	case errors.Is(err, sftp.ErrSSHFxNoSuchFile):
		return fxNoSuchFile, fs.ErrNotExist
	case errors.Is(err, sftp.ErrSSHFxPermissionDenied):
		return fxPermissionDenied, fs.ErrPermission
	}
	return 0, protocol.Classify(err)
}

// statusKind returns the kind of an SFTP status code.
func statusKind(code uint32) error {
	switch code {
	case fxNoSuchFile:
		return fs.ErrNotExist
	case fxPermissionDenied:
		return fs.ErrPermission
	case fxOpUnsupported:
		return protocol.ErrUnsupported
	case fxNoConnection, fxConnectionLost:
		return protocol.ErrTransient
	case fxNoSpaceOnFS, fxQuotaExceeded:
		return protocol.ErrNoSpace
	}
	// SSH_FX_FAILURE and the rest: unknown kind unless the caller knows
	// better (see writer's no-space check).
	return nil
}

// isFailure reports whether err carries the generic SSH_FX_FAILURE status.
func isFailure(err error) bool {
	var se *sftp.StatusError
	var fe *fxStatusError
	return errors.As(err, &se) && se.Code == fxFailure || errors.As(err, &fe) && fe.Code == fxFailure
}
