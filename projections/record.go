package projections

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/wire"
)

// carRecord is a CAR as the cars bucket holds it: what the producer said,
// the CAR's own state, and where it joined its aggregate. Everything that
// follows from the aggregate (its state, position, offset, proof, deals) is
// derived when read, so closing an aggregate never rewrites its CARs.
type carRecord struct {
	num    uint64 // key in the cars bucket: order of first acceptance
	view   wire.CarView
	member int // arrival index in view.Aggregate's members
}

// recordVersion is the first byte of a record; a change of format bumps it
// together with schemaVersion.
const recordVersion = 2 // 2: the group

// Own states of a CAR, as stored.
var (
	stateCodes = []string{aggregator.Queued, aggregator.Aggregating, aggregator.Rejected}
	errRecord  = errors.New("corrupt CAR record")
)

func stateCode(s string) (byte, error) {
	for i, c := range stateCodes {
		if c == s {
			return byte(i), nil
		}
	}
	return 0, fmt.Errorf("CAR state %q cannot be stored", s)
}

// appendRecord appends r's binary form: a version byte, the state, then
// varints and length-prefixed strings in a fixed order.
// recordSize bounds appendRecord's bytes for r, so a buffer of that
// capacity never grows.
func recordSize(r *carRecord) int {
	c := &r.view
	n := 2 + 4*binary.MaxVarintLen64 + 7*binary.MaxVarintLen32 +
		len(c.Car) + len(c.MD5) + len(c.ReplicatedAt) + len(c.Source) + len(c.Piece) + len(c.Reason) + len(c.Group)
	for _, u := range c.URLs {
		n += binary.MaxVarintLen32 + len(u)
	}
	return n
}

func appendRecord(dst []byte, r *carRecord) ([]byte, error) {
	c := &r.view
	st, err := stateCode(c.State)
	if err != nil {
		return nil, err
	}
	dst = append(dst, recordVersion, st)
	dst = binary.AppendUvarint(dst, c.Aggregate)
	dst = binary.AppendUvarint(dst, uint64(r.member))
	dst = binary.AppendUvarint(dst, c.Size)
	dst = binary.AppendUvarint(dst, c.PieceSize)
	dst = appendString(dst, c.Car)
	dst = appendString(dst, c.MD5)
	dst = binary.AppendUvarint(dst, uint64(len(c.URLs)))
	for _, u := range c.URLs {
		dst = appendString(dst, u)
	}
	dst = appendString(dst, c.ReplicatedAt)
	dst = appendString(dst, string(c.Source))
	dst = appendString(dst, c.Piece)
	dst = appendString(dst, c.Reason)
	dst = appendString(dst, c.Group)
	return dst, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeRecord reads a record; b may be bbolt's memory, so it is copied
// out of it, once: the strings are cut from one copy (a status request
// decodes one record, and a string each was most of its allocations).
func decodeRecord(num uint64, b []byte) (*carRecord, error) {
	d := recordReader{raw: b, str: string(b)}
	if d.byte() != recordVersion {
		return nil, fmt.Errorf("CAR record %d: %w: version", num, errRecord)
	}
	st := d.byte()
	r := &carRecord{num: num}
	c := &r.view
	c.Aggregate = d.uvarint()
	r.member = int(d.uvarint())
	c.Size = d.uvarint()
	c.PieceSize = d.uvarint()
	c.Car = d.string()
	c.MD5 = d.string()
	if n := d.uvarint(); n > 0 && n <= uint64(len(d.raw)-d.off) {
		c.URLs = make([]string, n)
		for i := range c.URLs {
			c.URLs[i] = d.string()
		}
	} else if n > 0 {
		d.err = true
	}
	c.ReplicatedAt = d.string()
	if src := d.string(); src != "" {
		c.Source = []byte(src)
	}
	c.Piece = d.string()
	c.Reason = d.string()
	c.Group = d.string()
	if d.err || d.off != len(d.raw) || int(st) >= len(stateCodes) || r.member < 0 {
		return nil, fmt.Errorf("CAR record %d: %w", num, errRecord)
	}
	c.State = stateCodes[st]
	return r, nil
}

// recordReader reads a record, remembering the first overrun: numbers
// from raw, the record as stored, and strings cut from str, one copy of
// it.
type recordReader struct {
	raw []byte
	str string
	off int
	err bool
}

func (d *recordReader) byte() byte {
	if d.off >= len(d.raw) {
		d.err = true
		return 0
	}
	d.off++
	return d.raw[d.off-1]
}

func (d *recordReader) uvarint() uint64 {
	v, n := binary.Uvarint(d.raw[d.off:])
	if n <= 0 {
		d.err = true
		return 0
	}
	d.off += n
	return v
}

func (d *recordReader) string() string {
	n := d.uvarint()
	if n > uint64(len(d.raw)-d.off) {
		d.err = true
		return ""
	}
	s := d.str[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

// member is an aggregate's member as the members bucket holds it: the CAR
// and its piece commitment, all a close needs to lay out and build the
// aggregate without reading the CARs.
const memberLen = 8 + 1 + 32 // car number, log2 of the padded size, root

func appendMember(dst []byte, num uint64, padded uint64, root [32]byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, num)
	dst = append(dst, byte(bits.TrailingZeros64(padded))) // a power of two
	return append(dst, root[:]...)
}
