package transfer

import (
	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

// Error is the error of a failed transfer: it carries the operation, the
// remote path, the bytes committed at the destination and the number of
// attempts, and wraps the cause. Test the cause with errors.Is against the
// sentinels below, fs.ErrNotExist and fs.ErrPermission.
type Error = resume.Error

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
	// ErrInvalidPath: a path with CR, LF or NUL, or an empty one.
	ErrInvalidPath = protocol.ErrInvalidPath
	// ErrTransient: the kind of failure that is retried; a final error
	// matches it only together with ErrRetriesExhausted.
	ErrTransient = protocol.ErrTransient
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
	ErrUnsupportedScheme = errUnsupportedScheme
)
