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
