package transfer

import (
	"errors"
	"fmt"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

// The error kinds a transfer can fail with, for errors.Is.
var (
	// ErrAuth: the login was rejected. Never retried.
	ErrAuth = protocol.ErrAuth
	// ErrNoSpace: the destination's file system is full. The partial
	// file is kept.
	ErrNoSpace = protocol.ErrNoSpace
	// ErrHostKey: the server's SSH host key or TLS certificate did not
	// verify.
	ErrHostKey = protocol.ErrHostKey
	// ErrInvalidPath: a remote path with CR, LF or NUL, or an empty one,
	// or one that cannot name a file (a download from "dir/"). A bad URL
	// is ErrInvalidURL instead.
	ErrInvalidPath = protocol.ErrInvalidPath
	// ErrInvalidURL: a URL that cannot name a server: malformed, no
	// host, a port outside 1-65535, a query or fragment, an unsupported
	// scheme, an sftp:// URL without a user name. Its errors are
	// *URLError values.
	ErrInvalidURL = errors.New("invalid URL")
	// ErrNotRegular: a local path that exists and is not a regular file
	// (a device, fifo, socket, directory or symbolic link). A download
	// never writes to or replaces such a file, and an upload never reads
	// one (a fifo would block, a device never ends). Checked before any
	// connection is made.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTransient: the kind of failure that is retried; a final error
	// matches it only together with ErrRetriesExhausted.
	ErrTransient = protocol.ErrTransient
	// ErrProtocol: the server broke the protocol (a negative size, an
	// oversized reply). Never retried.
	ErrProtocol = protocol.ErrProtocol
	// ErrRetriesExhausted: too many attempts in a row made no progress.
	ErrRetriesExhausted = resume.ErrRetriesExhausted
	// ErrStalled: no byte moved for the stall timeout.
	ErrStalled = resume.ErrStalled
	// ErrVerify: the result did not verify. Nothing is deleted.
	ErrVerify = resume.ErrVerify
	// ErrSourceChanged: the local source kept changing during an upload.
	ErrSourceChanged = resume.ErrSourceChanged
	// ErrUnsupportedScheme: the URL's scheme is not ftp, ftps,
	// ftps+implicit or sftp.
	// Such an error also matches ErrInvalidURL.
	ErrUnsupportedScheme = errUnsupportedScheme
)

// URLError reports a URL that cannot be used, modelled on url.Error. It
// never holds the password.
type URLError struct {
	// URL is the URL with any password removed, or "" when it does not
	// parse at all (the raw text could hold a password).
	URL string
	// Err says what is wrong.
	Err error
}

func (e *URLError) Error() string {
	if e.URL == "" {
		return "invalid URL: " + e.Err.Error()
	}
	return fmt.Sprintf("invalid URL %q: %v", e.URL, e.Err)
}

// Unwrap returns ErrInvalidURL and the cause.
func (e *URLError) Unwrap() []error { return []error{ErrInvalidURL, e.Err} }
