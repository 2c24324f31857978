//go:build unix

package resume

import (
	"os"
	"syscall"
)

// openNoFollow opens path for reading without following a symbolic link
// at its last component: a state file is never read through a planted link.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
