//go:build !linux

package ftp

import "syscall"

// controlSocket does nothing where TCP_NOTSENT_LOWAT is not available.
func controlSocket(_, _ string, _ syscall.RawConn) error { return nil }
