//go:build !linux && !darwin

package node

// freeSpace cannot tell here: the disk watch relies on JetStream's own
// write errors alone.
func freeSpace(string) (uint64, bool) { return 0, false }
