package ftp

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat bounds the bytes a socket holds that the kernel has not yet
// sent. Without it an upload's send buffer autotunes to several MiB, all
// of which is lost and sent again when the connection dies; with it the
// window in flight still grows as the link needs, but little waits behind
// it.
const notSentLowat = 128 << 10

// controlSocket sets TCP_NOTSENT_LOWAT on every connection the session
// dials (best effort: an old kernel without it is no reason to fail).
func controlSocket(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
	})
}
