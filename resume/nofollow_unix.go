//go:build unix

package resume

import (
	"errors"
	"os"
	"syscall"
)

// openNoFollow opens a state file for reading without following a
// symbolic link at its last component, and only if it is a regular file
// that this user owns and nobody else may write: a record planted in a
// shared directory by someone else must never vouch for a partial.
func openNoFollow(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.Mode().IsRegular():
			err = errors.New("state file is not a regular file")
		case fi.Mode().Perm()&0o022 != 0:
			err = errors.New("state file is writable by others")
		case ok && int(st.Uid) != os.Geteuid():
			err = errors.New("state file belongs to another user")
		}
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// openOwnRecord opens the record file at path for writing in place, or
// returns nil: when there is none yet, it is created (private); an
// existing one must be this user's own regular file with one link that
// nobody else may write, reached without following a link and without
// blocking on a fifo. nil sends the caller to an atomic replacement.
func openOwnRecord(path string) *os.File { return openOwn(path, 0) }

// openOwn is openOwnRecord with more open flags (os.O_APPEND).
func openOwn(path string, flag int) *os.File {
	f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o022 != 0 ||
		int(st.Uid) != os.Geteuid() || st.Nlink != 1 {
		f.Close()
		return nil
	}
	return f
}
