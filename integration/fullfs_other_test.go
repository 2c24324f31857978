//go:build !linux

package integration_test

import "errors"

// mountTmpfs is Linux only.
func mountTmpfs(dir string, size int64, uid, gid int) (unmount func(), err error) {
	return nil, errors.New("tmpfs mounts are Linux only")
}
