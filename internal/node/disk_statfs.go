//go:build linux || darwin

package node

import "syscall"

// freeSpace is the space on dir's file system that an unprivileged writer
// may still use.
func freeSpace(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}
