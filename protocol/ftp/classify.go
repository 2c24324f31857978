package ftp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net/textproto"

	"github.com/openhaul/haul/protocol"
)

// failure describes the operation an error came from. It is the single
// place where FTP reply codes and transport errors become protocol kinds.
type failure struct {
	op   string // protocol.Error.Op: "dial", "login", "stat", "read", ...
	path string
	// verb is the FTP command whose reply is the error ("SIZE", "REST",
	// "STOR", ...), as seen on the wire; it refines the meaning of 550.
	verb string
	// offset is the transfer's start offset (0 for non-transfers).
	offset int64
	// started reports that the server accepted the transfer (125/150),
	// i.e. that a resumed STOR was not refused.
	started bool
}

// wrap returns err as a *protocol.Error classified for f. A nil err yields
// nil; an err that already is a *protocol.Error is returned unchanged.
func (f failure) wrap(err error) error {
	if err == nil {
		return nil
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return err
	}
	code := 0
	var te *textproto.Error
	if errors.As(err, &te) {
		code = te.Code
	}
	if protocol.HostNotFound(err) {
		err = protocol.HostError(err)
	}
	return &protocol.Error{Op: f.op, Path: f.path, Code: code, Kind: f.kind(code, err), Err: err}
}

// kind maps a reply code (0 when none) and the error chain to a kind.
func (f failure) kind(code int, err error) error {
	switch {
	case errors.Is(err, protocol.ErrProtocol):
		// protocol.Classify does not know this kind.
		return protocol.ErrProtocol
	case protocol.HostNotFound(err):
		return fs.ErrNotExist
	}
	if code != 0 {
		if k, ok := f.codeKind(code); ok {
			return k
		}
	}
	if isCertError(err) {
		return protocol.ErrHostKey
	}
	return protocol.Classify(err)
}

func isStore(verb string) bool { return verb == "STOR" || verb == "APPE" }

// codeKind maps an FTP reply code; ok is false for codes with no meaning of
// their own, which fall back to the transport classification.
func (f failure) codeKind(code int) (kind error, ok bool) {
	switch {
	case code == 421 && (f.op == "dial" || f.op == "login"):
		// Refused before the session began: "too many connections"
		// (vsftpd max_per_ip/max_clients, proftpd MaxClients).
		return protocol.ErrTooManyConns, true
	case code == 421 || code == 425 || code == 426:
		return protocol.ErrTransient, true
	case code == 530 || code == 532 || code == 430:
		return protocol.ErrAuth, true
	case (code == 331 || code == 332) && (f.op == "login" || f.op == "dial"):
		// USER/PASS answered with "need more" where the login could not
		// proceed (for example a password was refused with 332).
		return protocol.ErrAuth, true
	case f.verb == "REST":
		// Any reply to REST but 350 (which is no error): a refusal
		// (500/501/502/504/550 ..., 202 "superfluous") or a reply no
		// server should send there (200, 150). The server cannot start
		// a transfer at an offset; rest.go decides whether the session
		// remembers it or ends.
		return protocol.ErrResumeUnsupported, true
	case code == 452 || code == 552:
		return protocol.ErrNoSpace, true
	case isStore(f.verb) && f.offset > 0 && !f.started && code >= 400:
		// A resumed STOR refused before any data moved (proftpd
		// without AllowStoreRestart answers 451): restart from zero.
		return protocol.ErrResumeUnsupported, true
	case code == 451 && isStore(f.verb) && f.started:
		// The server failed to write what it received: vsftpd's only
		// word for a full disk ("451 Failure writing to local file").
		return protocol.ErrStorage, true
	case code == 450 || code == 451:
		return protocol.ErrTransient, true
	case f.started && (f.verb == "RETR" || isStore(f.verb)) && code >= 500 && code != 530:
		// A transfer the server accepted and then ended with a permanent
		// code (vsftpd's "500 OOPS" when its session process dies): the
		// command was valid, the server failed. Try again.
		return protocol.ErrTransient, true
	case code == 550:
		switch f.verb {
		case "STOR", "APPE", "RNTO", "MKD":
			return fs.ErrPermission, true
		}
		return fs.ErrNotExist, true
	case code == 553:
		return fs.ErrPermission, true
	case code == 500 || code == 502 || code == 504:
		return protocol.ErrUnsupported, true
	}
	return nil, false
}

// shownError shows the text of an error that quotes the server as
// protocol.ServerText makes it; errors.Is and errors.As see the error
// itself.
type shownError struct {
	err  error
	text string
}

func (e *shownError) Error() string { return e.text }
func (e *shownError) Unwrap() error { return e.err }

// isCertError reports a TLS certificate that did not verify.
func isCertError(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
	)
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}
