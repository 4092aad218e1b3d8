package jetlog

import (
	"testing"
	"time"
)

// SetReplicaEnd makes every read's consumer behave, until the test ends,
// as one on a replica whose copy of each stream ends at end(stream) (0:
// the whole stream); reads wait stall for a message before giving up.
func SetReplicaEnd(tb testing.TB, stall time.Duration, end func(stream string) uint64) {
	oldEnd, oldStall := replicaEnd, readStall
	replicaEnd, readStall = end, stall
	tb.Cleanup(func() { replicaEnd, readStall = oldEnd, oldStall })
}
