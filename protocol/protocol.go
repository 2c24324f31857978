// Package protocol defines the small, offset-based interface that haul's
// resume engine uses to talk to a remote file system, and the single error
// taxonomy shared by every protocol implementation.
//
// Implementations live in the sub-packages protocol/ftp and protocol/sftp.
// Protocol quirks (reply codes, status codes, TLS session reuse, append
// modes) stay inside those packages; everything above this package sees only
// Session, the optional capability interfaces and the errors in errors.go.
//
// All offsets are int64 byte offsets from the start of the file.
package protocol

import (
	"context"
	"io"
	"strings"
	"time"
)

// FileInfo is what a Session knows about a remote file.
type FileInfo struct {
	// Size is the file's size in bytes.
	Size int64
	// ModTime is the modification time, or the zero time when the server
	// does not report one.
	ModTime time.Time
	// IsDir reports whether the path names a directory.
	IsDir bool
}

// Session is one logged-in connection to a remote file system.
//
// A Session is not safe for concurrent use: it performs one operation at a
// time, and a reader or writer returned by OpenReader or OpenWriter must be
// closed before the next call. Open several sessions to move several byte
// ranges at once.
//
// Every method honours its context: when ctx is cancelled the call returns
// promptly (implementations close the underlying connection to unblock it),
// after which the Session is unusable and must be closed.
//
// Errors are classified with the sentinels of this package (ErrTransient,
// ErrAuth, ErrNoSpace, ...) and the standard fs.ErrNotExist and
// fs.ErrPermission; test them with errors.Is.
type Session interface {
	// Stat returns information about the remote path. A missing path
	// yields an error that matches fs.ErrNotExist.
	Stat(ctx context.Context, path string) (FileInfo, error)

	// OpenReader opens path for reading, starting at byte offset. The
	// returned reader yields the bytes from offset to the end of the file;
	// the caller may close it early (the implementation aborts the
	// transfer cleanly). The stream ends with io.EOF only when the server
	// reported a complete transfer; a stream that ends short is an error.
	// The context bounds the whole life of the reader.
	OpenReader(ctx context.Context, path string, offset int64) (io.ReadCloser, error)

	// OpenWriter opens path for writing, starting at byte offset, which
	// must not exceed the current remote size. Bytes past offset are
	// replaced (implementations truncate to offset where the protocol
	// allows). Close reports whether the server accepted everything
	// written; a write is committed only once Close returns nil. The
	// context bounds the whole life of the writer.
	OpenWriter(ctx context.Context, path string, offset int64) (Writer, error)

	// Rename renames from to to, replacing to if it exists where the
	// protocol allows.
	Rename(ctx context.Context, from, to string) error

	// Remove deletes the file at path.
	Remove(ctx context.Context, path string) error

	// Close ends the session and releases every connection it holds.
	Close() error
}

// Writer is the write side of an upload opened at an offset.
type Writer interface {
	io.WriteCloser

	// Acked returns how many bytes, counted from the open offset, the
	// server has acknowledged as written contiguously. Protocols that have
	// no per-write acknowledgement (FTP) return the number of bytes handed
	// to the connection, which is only an upper bound: the engine always
	// resumes at min(remote size, offset+Acked()). Acked is safe to call
	// after a failed Write or Close, and from another goroutine while a
	// Write runs (the engine records it periodically).
	Acked() int64
}

// SequentialWriter is implemented by writers whose server writes the
// bytes in the order they were sent, one stream (FTP's STOR): after any
// failure, even of the client process, the remote file holds a contiguous
// prefix of what was written after the open offset, so its size is a safe
// resume point. Writers with several requests in flight (SFTP) do not
// implement it: their remote size may count holes.
type SequentialWriter interface {
	Writer
	// Sequential marks the type; it does nothing.
	Sequential()
}

// Dialer opens a new logged-in Session. The engine calls it once per
// attempt; a Dialer must perform at most one login per call.
type Dialer func(ctx context.Context) (Session, error)

// Checker is implemented by sessions that can tell cheaply whether they
// are still usable after a failed operation (FTP NOOP on the control
// connection, an SFTP request), so that a failed transfer resumes on the
// same logged-in session instead of logging in again. A nil error means a
// round trip to the server succeeded.
type Checker interface {
	Check(ctx context.Context) error
}

// Sizer is implemented by sessions that can tell a file's size in fewer
// round trips than Stat (FTP's SIZE alone, where Stat adds MDTM, or a
// directory probe for a missing file). A missing path yields an error
// matching fs.ErrNotExist; so may a directory, on servers whose answer
// does not tell them apart.
type Sizer interface {
	Size(ctx context.Context, path string) (int64, error)
}

// ModTimer is implemented by sessions that can tell a file's modification
// time alone in fewer round trips than Stat (FTP's MDTM: one command,
// where Stat sends SIZE and MDTM). A missing file yields an error matching
// fs.ErrNotExist; a time the server cannot tell, one matching
// ErrUnsupported.
type ModTimer interface {
	ModTime(ctx context.Context, path string) (time.Time, error)
}

// RangeWriter is implemented by sessions that can write into the middle
// of a file without cutting it (SFTP), so that writers on several sessions
// can fill disjoint ranges of one file at once.
type RangeWriter interface {
	// OpenRangeWriter opens path for writing at offset, creating the file
	// if it is missing and leaving every byte outside what is written as
	// it is (no truncation, no append mode). Acked has the meaning of
	// Writer.Acked.
	OpenRangeWriter(ctx context.Context, path string, offset int64) (Writer, error)
}

// RangeReader is implemented by sessions whose readers request data ahead
// of the caller (SFTP keeps many reads in flight), so that a reader of one
// byte range asks for nothing past its end.
type RangeReader interface {
	// OpenRangeReader is OpenReader for a caller that reads at most length
	// bytes from offset. The stream may end with io.EOF after those bytes
	// instead of at the end of the file, and it may also go on past them:
	// the caller stops reading at length either way.
	OpenRangeReader(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error)
}

// UnconfirmedRangeWriter is implemented by sessions whose range writes
// keep RangeWriter's promises only on some servers, and whose range writers
// acknowledge nothing but a whole transfer (FTP's REST + STOR). There the
// server decides what a write past the end does (vsftpd leaves a hole,
// proftpd refuses it, pure-ftpd writes at the end instead), whether a second
// connection may write the file while another does (vsftpd's
// lock_upload_files makes it wait), and offset 0 truncates; Acked is only an
// upper bound until Close returns nil. A caller first writes the start of
// the file with OpenWriter, then probes what a range write past the end
// does, and after a failed range reads it back to learn what landed.
type UnconfirmedRangeWriter interface {
	RangeWriter
	// UnconfirmedRanges marks the type; it does nothing.
	UnconfirmedRanges()
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	// Name is the entry's base name (never "." or "..", never with a
	// slash).
	Name string
	FileInfo
}

// MaxDirEntries bounds one listing: a server that sends more entries
// fails the call with ErrProtocol rather than exhaust memory.
const MaxDirEntries = 1 << 20

// DirReader is implemented by sessions that can list a directory.
type DirReader interface {
	// ReadDir returns path's entries, without "." and "..", in no
	// particular order. A missing path yields an error matching
	// fs.ErrNotExist; a path that is not a directory one matching
	// ErrInvalidPath. Names a server sends with a slash, NUL, CR or LF
	// are dropped (never trusted as a path).
	ReadDir(ctx context.Context, path string) ([]DirEntry, error)
}

// DirMaker is implemented by sessions that can create directories.
type DirMaker interface {
	// Mkdir creates the directory path. A missing parent yields an error
	// matching fs.ErrNotExist, on every protocol; an existing directory
	// (or file) at path one matching fs.ErrExist.
	Mkdir(ctx context.Context, path string) error
}

// Truncater is implemented by sessions that can set a remote file's size.
type Truncater interface {
	Truncate(ctx context.Context, path string, size int64) error
}

// SpaceReporter is implemented by sessions that can report the free space,
// in bytes, available for path (SFTP's statvfs@openssh.com).
type SpaceReporter interface {
	FreeSpace(ctx context.Context, path string) (int64, error)
}

// Hasher is implemented by sessions whose server can hash a remote file
// (FTP HASH/XSHA256, SFTP check-file). Algorithms are named in lower case
// ("sha256", "sha1", "md5", "crc32"). end < 0 means the end of the file.
type Hasher interface {
	// HashAlgorithms lists the algorithms the server offers, best first.
	HashAlgorithms() []string
	// Hash returns the digest of bytes [start, end) of path.
	Hash(ctx context.Context, path, algorithm string, start, end int64) ([]byte, error)
}

// CheckPath rejects path names that cannot be sent safely: CR, LF and NUL
// would let a name inject commands into a line-based control connection.
// It returns an error matching ErrInvalidPath.
func CheckPath(path string) error {
	if path == "" {
		return &Error{Op: "check", Path: path, Kind: ErrInvalidPath, Err: errEmptyPath}
	}
	if strings.ContainsAny(path, "\r\n\x00") {
		return &Error{Op: "check", Path: path, Kind: ErrInvalidPath, Err: errBadChar}
	}
	return nil
}
