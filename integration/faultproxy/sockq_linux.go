package faultproxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// queues returns the sizes of c's kernel queues: in, the bytes received
// that the proxy has not read (SIOCINQ; a received FIN is not counted);
// unacked, the bytes written that the peer has not acknowledged
// (SIOCOUTQ); unsent, those of them not even sent yet (SIOCOUTQNSD). ok is
// false when they could not be read.
func queues(c *net.TCPConn) (in, unacked, unsent int64, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, false
	}
	var q [3]int
	var errs [3]error
	if err := rc.Control(func(fd uintptr) {
		for i, req := range [3]uint{unix.SIOCINQ, unix.SIOCOUTQ, unix.SIOCOUTQNSD} {
			q[i], errs[i] = unix.IoctlGetInt(int(fd), req)
		}
	}); err != nil || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		return 0, 0, 0, false
	}
	return int64(q[0]), int64(q[1]), int64(q[2]), true
}
