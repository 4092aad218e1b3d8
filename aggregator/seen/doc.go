// Package seen is the fold's dedupe set on disk: an exact, deterministic
// aggregator.Accepted whose keys live in sorted immutable run files, so
// the heap holds only the keys changed since the last checkpoint and, per
// run, a filter and a fence index.
//
// # Layout
//
// Puts and Deletes go to a memtable. Checkpoint freezes it; Persist writes
// the frozen ops as a run (keys ascending, a Delete of a key an older run
// holds as a tombstone) and then merges: while the newest run holds at
// least as many entries as the one before it, the two become one
// (a binary counter), and a merge that makes the oldest run drops its
// tombstones. A run's name is the hex SHA-256 of its bytes, and the
// manifest names the runs, oldest first, and the number of keys.
//
// # Rules
//
//   - Exact: a lookup reads the memtable, the frozen memtables, then the
//     runs newest first; a filter only says "surely absent", a fence says
//     which block to read. No answer is ever approximate.
//   - Deterministic: the bytes of every run and of the manifest are a pure
//     function of the sequence of ops and checkpoints (the merge rule looks
//     at entry counts only), so two leaders that fold the same log to the
//     same checkpoint write the same runs and the same manifest. Another
//     checkpoint schedule gives other runs with the same content.
//   - Off the heap: run blocks are read with pread, not mmap, so the
//     process's resident memory does not grow with the runs' size; what
//     stays resident per run is its filter (10 bits per entry) and its
//     fence (16 bytes per block of blockEntries entries).
//   - Get, Put, Delete, Len and Checkpoint are called from one goroutine
//     (the fold's); Persist runs in another, concurrently with them, and
//     persists checkpoints in the order they were taken.
//   - A run read from a RunStore or found in the cache is verified against
//     its name before it is used; a cached run that fails is fetched again.
//     A run this process wrote or verified, unchanged in size and
//     modification time since, is not hashed again (Prefetch, then Open).
package seen
