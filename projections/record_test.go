package projections

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/wire"
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
		rec := &carRecord{num: 1 + r.Uint64N(1000), member: r.IntN(math.MaxInt32), view: wire.CarView{
			Car: str(), State: stateCodes[r.IntN(len(stateCodes))], Size: big(), MD5: str(),
			ReplicatedAt: str(), Piece: str(), PieceSize: big(), Aggregate: big(), Reason: str(), Group: str(),
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

// A record cut short anywhere, or followed by a stray byte, is refused as
// corrupt rather than read in part or past its end; the reader's numbers
// are encoding/binary's varints, so what it adds is its own bounds.
func TestRecordsCutShortAreRefused(t *testing.T) {
	rec := &carRecord{num: 3, member: 1 << 20, view: wire.CarView{
		Car: "bagbaiera-car", State: aggregator.Aggregating, Size: 1 << 40, MD5: "9e107d9d372bb6826bd81d3542a419d6",
		URLs: []string{"https://a.example/x.car", "https://b.example/x.car"}, ReplicatedAt: "2026-11-23T00:00:00Z",
		Source: json.RawMessage(`{"k":"v"}`), Piece: "bafkzcib-piece", PieceSize: 1 << 30, Aggregate: 1 << 33, Group: "space-a",
	}}
	data, err := appendRecord(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeRecord(rec.num, data); err != nil {
		t.Fatalf("the whole record: %v", err)
	}
	for n := range len(data) {
		if _, err := decodeRecord(rec.num, data[:n]); !errors.Is(err, errRecord) {
			t.Fatalf("record cut to %d of %d bytes: got %v, want errRecord", n, len(data), err)
		}
	}
	if _, err := decodeRecord(rec.num, append(data, 0)); !errors.Is(err, errRecord) {
		t.Fatalf("record with a stray byte: got %v, want errRecord", err)
	}
}
