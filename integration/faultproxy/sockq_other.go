//go:build !linux

package faultproxy

import "net"

// queues reports nothing outside Linux: the socket queue sizes are read
// with Linux ioctls (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD). Without them the
// Close and Reset faults do not wait for the peer's acknowledgement before
// the teardown, and the dropped-byte counters miss the kernel queues.
func queues(*net.TCPConn) (in, unacked, unsent int64, ok bool) { return 0, 0, 0, false }
