package fetch

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteBack asks the kernel to begin writing a range of f to disk
// without waiting for it. It is advice: an error changes nothing, the
// final sync still makes the CAR durable.
func startWriteBack(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
