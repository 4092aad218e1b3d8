package fetch

import "os"

// flushEvery is how many spooled bytes start their write-back to disk.
const flushEvery = 32 << 20

// spoolWriter writes the network bytes to the spool file and starts their
// write-back every flushEvery bytes (where the system can), so that the
// disk writes overlap the hashing and Store.Put's final sync finds little
// left to do: without it, the sync of a whole CAR's dirty pages came after
// the last byte, with the cores idle.
type spoolWriter struct {
	f       *os.File
	off     int64 // bytes written
	flushed int64 // bytes whose write-back was started
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= flushEvery {
		startWriteBack(w.f, w.flushed, w.off-w.flushed)
		w.flushed = w.off
	}
	return n, err
}
