package projections

import (
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
