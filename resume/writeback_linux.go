package resume

import "golang.org/x/sys/unix"

// startWriteback asks the kernel to start writing [off, off+n) of f to
// disk now, without waiting, so that the fsync that ends a download finds
// little left to do. Best effort: errors are ignored.
func startWriteback(f any, off, n int64) {
	if fd, ok := f.(interface{ Fd() uintptr }); ok {
		_ = unix.SyncFileRange(int(fd.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}
