package projections

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// A record reads back as written, and recordSize bounds it, so the writer's
// buffer never grows (a wrong bound would only cost a copy: this test is
// what notices).
func TestRecordsReadBackAndFitTheirSize(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	str := func() string { return strings.Repeat("x", r.IntN(3)*r.IntN(300)) }
	big := func() uint64 {
		if r.IntN(2) == 0 {
			return math.MaxUint64 - r.Uint64N(10)
		}
		return r.Uint64N(1 << 40)
	}
	for range 2000 {
		rec := &carRecord{num: 1 + r.Uint64N(1000), member: r.IntN(math.MaxInt32), view: CarView{
			Car: str(), State: stateCodes[r.IntN(len(stateCodes))], Size: big(), MD5: str(),
			ReplicatedAt: str(), Piece: str(), PieceSize: big(), Aggregate: big(), Reason: str(),
		}}
		for range r.IntN(4) {
			rec.view.URLs = append(rec.view.URLs, str())
		}
		if r.IntN(2) == 0 {
			rec.view.Source = json.RawMessage(`{"k":"` + str() + `"}`)
		}
		size := recordSize(rec)
		data, err := appendRecord(make([]byte, 0, size), rec)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > size {
			t.Fatalf("record of %d bytes, recordSize says at most %d", len(data), size)
		}
		got, err := decodeRecord(rec.num, data)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.view.URLs) == 0 {
			rec.view.URLs = got.view.URLs // nil and empty read the same
		}
		if !reflect.DeepEqual(got, rec) {
			t.Fatalf("read back %+v, wrote %+v", got, rec)
		}
	}
}

// The record reader's varints are encoding/binary's: the same value, the
// same length, and an error wherever binary.Uvarint reports one (cut
// short, or past 64 bits).
func TestRecordVarintsAreBinarys(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	inputs := [][]byte{nil, {0x80}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}}
	for range 5000 {
		b := binary.AppendUvarint(nil, r.Uint64()>>r.IntN(64))
		if r.IntN(4) == 0 {
			b = b[:r.IntN(len(b)+1)]
		}
		inputs = append(inputs, append(b, byte(r.Uint32())))
	}
	for _, b := range inputs {
		want, n := binary.Uvarint(b)
		d := recordReader{b: string(b)}
		got := d.uvarint()
		if n <= 0 {
			if !d.err {
				t.Fatalf("%x: read %d, binary.Uvarint reports an error (%d)", b, got, n)
			}
			continue
		}
		if d.err || got != want || len(d.b) != len(b)-n {
			t.Fatalf("%x: read %d leaving %d bytes (error %v); binary.Uvarint %d of %d bytes", b, got, len(d.b), d.err, want, n)
		}
	}
}
