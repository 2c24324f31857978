//go:build unix

package transfer

import "syscall"

// oNoFollow makes os.OpenFile refuse a symbolic link at the last component.
const oNoFollow = syscall.O_NOFOLLOW
