package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// LocalPath returns the file a download of remotePath to localPath
// writes: localPath itself, or, when localPath is an existing directory
// or ends in a path separator, the remote path's base name inside it (as
// curl -O, lftp and rclone do). It fails with ErrNotRegular when that file
// exists and is not a regular file (a device such as /dev/null, a fifo, a
// socket, a directory, a symbolic link): a download never replaces one. It
// touches no network.
func LocalPath(localPath, remotePath string) (string, error) {
	if localPath == "" {
		return "", &fs.PathError{Op: "download to", Path: localPath, Err: errors.New("empty local path")}
	}
	dir := strings.HasSuffix(localPath, "/") || strings.HasSuffix(localPath, string(filepath.Separator))
	fi, err := os.Stat(localPath)
	switch {
	case dir && err != nil:
		return "", fmt.Errorf("download into directory: %w", err)
	case err == nil && fi.IsDir():
		dir = true
	}
	target := localPath
	if dir {
		base := path.Base(remotePath)
		if remotePath == "" || strings.HasSuffix(remotePath, "/") || base == "." || base == ".." || base == "/" {
			return "", fmt.Errorf("download %q into directory %s: %w: the remote path names no file", remotePath, localPath, ErrInvalidPath)
		}
		target = filepath.Join(localPath, base)
	}
	if err := regularOrAbsent(target); err != nil {
		return "", err
	}
	return target, nil
}

// regularOrAbsent fails with ErrNotRegular when p exists and is anything
// but a regular file; a symbolic link is refused whatever it points to.
func regularOrAbsent(p string) error {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode().IsRegular():
		return nil
	}
	return &fs.PathError{Op: "write", Path: p, Err: fmt.Errorf("%w (%s): a download writes and replaces regular files only", ErrNotRegular, describeMode(fi.Mode()))}
}

// describeMode names a file type for an error message.
func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a fifo"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// RemotePath returns the remote file an upload of localPath to remotePath
// writes: remotePath itself, or, when remotePath is empty (the login
// directory) or ends in "/", localPath's base name in that directory.
func RemotePath(localPath, remotePath string) (string, error) {
	if remotePath != "" && !strings.HasSuffix(remotePath, "/") {
		return remotePath, nil
	}
	base := filepath.Base(localPath)
	if localPath == "" || base == "." || base == ".." || base == string(filepath.Separator) {
		return "", fmt.Errorf("upload %s to %q: %w: name the remote file", localPath, remotePath, ErrInvalidPath)
	}
	return remotePath + base, nil
}

// openSource opens an upload's source without blocking on a fifo and
// accepts only a regular file (following a symbolic link is fine: it is
// only read).
func openSource(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|oNonBlock, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = &fs.PathError{Op: "read", Path: p, Err: fmt.Errorf("%w (%s): only a regular file is uploaded", ErrNotRegular, describeMode(fi.Mode()))}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
