//go:build !unix

package resume

import (
	"errors"
	"io/fs"
	"os"
)

// openNoFollow opens path for reading, refusing a symbolic link.
func openNoFollow(path string) (*os.File, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errors.New("is a symbolic link")}
	}
	return os.Open(path)
}

// openOwnRecord returns nil: elsewhere than unix, records are always
// replaced atomically.
func openOwnRecord(string) *os.File { return nil }

// openOwn opens path for writing with flag, creating it when missing,
// unless it is a symbolic link or not a regular file (nil).
func openOwn(path string, flag int) *os.File {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil
	}
	return f
}
