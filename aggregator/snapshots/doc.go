package snapshots

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/ferry-dev/ferry/aggregator"
)

// The snapshot object's bytes (version 1), numbers as unsigned varints:
//
//	"ferry-snapshot" version seq lastIn digest(32 bytes)
//	len(manifest) manifest len(state) state
const (
	docMagic   = "ferry-snapshot"
	docVersion = 1
)

// Encode is the snapshot object's bytes for snap.
func Encode(snap aggregator.Snapshot) []byte {
	b := append([]byte(docMagic), docVersion)
	b = binary.AppendUvarint(b, snap.Seq)
	b = binary.AppendUvarint(b, snap.LastIn)
	b = append(b, snap.Digest[:]...)
	b = binary.AppendUvarint(b, uint64(len(snap.Seen)))
	b = append(b, snap.Seen...)
	b = binary.AppendUvarint(b, uint64(len(snap.State)))
	return append(b, snap.State...)
}

// Decode reads what Encode wrote.
func Decode(data []byte) (aggregator.Snapshot, error) {
	var snap aggregator.Snapshot
	rest, ok := bytes.CutPrefix(data, []byte(docMagic))
	if !ok || len(rest) == 0 {
		return snap, fmt.Errorf("%w: not a snapshot object", aggregator.ErrSnapshot)
	}
	if v := rest[0]; v != docVersion {
		return snap, fmt.Errorf("%w: snapshot object version %d, this ferry reads %d", aggregator.ErrSnapshot, v, docVersion)
	}
	rest = rest[1:]
	num := func() uint64 {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			ok = false
			return 0
		}
		rest = rest[n:]
		return v
	}
	field := func() []byte {
		n := num()
		if !ok || n > uint64(len(rest)) {
			ok = false
			return nil
		}
		p := rest[:n]
		rest = rest[n:]
		return p
	}
	snap.Seq, snap.LastIn = num(), num()
	if ok && len(rest) >= len(snap.Digest) {
		copy(snap.Digest[:], rest)
		rest = rest[len(snap.Digest):]
	} else {
		ok = false
	}
	snap.Seen = field()
	snap.State = field()
	if !ok || len(rest) != 0 {
		return aggregator.Snapshot{}, fmt.Errorf("%w: snapshot object truncated or corrupt", aggregator.ErrSnapshot)
	}
	return snap, nil
}
