//go:build unix

package transfer

import "syscall"

// oNoFollow makes os.OpenFile refuse a symbolic link at the last component.
const oNoFollow = syscall.O_NOFOLLOW

// oNonBlock makes opening a fifo return at once instead of waiting for a
// writer (regular files ignore it).
const oNonBlock = syscall.O_NONBLOCK
