package integration_test

import (
	"fmt"
	"syscall"
)

// mountTmpfs mounts a tmpfs of size bytes owned by uid:gid on dir.
func mountTmpfs(dir string, size int64, uid, gid int) (unmount func(), err error) {
	opts := fmt.Sprintf("size=%d,mode=0755,uid=%d,gid=%d", size, uid, gid)
	if err := syscall.Mount("haul-test-full", dir, "tmpfs", 0, opts); err != nil {
		return nil, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	// Detached: a server session that still holds a file open there does
	// not keep the mount point busy; the memory is freed when it closes.
	return func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) }, nil
}
