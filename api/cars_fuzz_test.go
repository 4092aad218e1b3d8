package api

import (
	"fmt"
	"slices"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ipfs/go-cid"
)

// FuzzCarsBody holds the front door of POST /v1/cars — splitBody, then
// decodeReplicated and Validate for each event, as submit runs them — to
// its contract on any body:
//
//   - no panic; a body is refused with an error, or split into 1 to
//     MaxCarsPerRequest events (exactly one when it is a single object);
//   - every event decodes to an event (never nil), with a reason when it
//     is not a car.replicated;
//   - an event the front door would accept is one the fold accepts: its
//     CAR CID parses (submit calls cid.MustParse on it), and what is
//     published (Encode) decodes as the same car.replicated, valid too.
//
// Seed corpus: testdata/fuzz/FuzzCarsBody (FERRY_WRITE_FUZZ_SEEDS=1
// regenerates it).
func FuzzCarsBody(f *testing.F) {
	f.Add([]byte(`{}`))
	writeCarsSeeds(f)
	const deal = 8 << 20
	f.Fuzz(func(t *testing.T, body []byte) {
		raws, single, err := splitBody(body)
		if err != nil {
			if raws != nil {
				t.Fatalf("events and error: %v", err)
			}
			return
		}
		if len(raws) == 0 || len(raws) > MaxCarsPerRequest || (single && len(raws) != 1) {
			t.Fatalf("split into %d events (single %v)", len(raws), single)
		}
		for _, raw := range raws {
			e, refused := decodeReplicated(raw)
			if e == nil {
				t.Fatalf("decodeReplicated returned no event (reason %v)", refused)
			}
			if refused == nil {
				refused = e.Validate(aggregator.DealRoom(deal))
			}
			if refused != nil {
				// Refused events are published too, so the refusal is on
				// record: they must encode.
				if _, err := events.Encode(e); err != nil {
					t.Fatalf("refused event does not encode: %v", err)
				}
				continue
			}
			if _, err := cid.Parse(e.Car); err != nil {
				t.Fatalf("accepted CAR %q does not parse: %v", e.Car, err)
			}
			enc, err := events.Encode(e)
			if err != nil {
				t.Fatalf("accepted event does not encode: %v", err)
			}
			ev, err := events.Decode(enc)
			if err != nil {
				t.Fatalf("the fold cannot decode an accepted event: %v\n%s", err, enc)
			}
			back, ok := ev.(*events.CarReplicated)
			if !ok {
				t.Fatalf("accepted event reads back as %T", ev)
			}
			if err := back.Validate(aggregator.DealRoom(deal)); err != nil {
				t.Fatalf("POST /v1/cars accepts what the fold rejects: %v\n%s", err, enc)
			}
			if back.Car != e.Car || back.Size != e.Size || back.MD5 != e.MD5 || !slices.Equal(back.URLs, e.URLs) || back.Piece != e.Piece {
				t.Fatalf("accepted event changed on the way to the log:\n%+v\n%+v", e, back)
			}
		}
	})
}

func writeCarsSeeds(tb testing.TB) {
	one := string(testutil.MustEncode(testutil.Replicated(1, 1000, true)))
	two := string(testutil.MustEncode(testutil.Replicated(2, 2000, false)))
	bare := testutil.Replicated(3, 3000, false)
	bare.Source = []byte(`{"space":"did:key:z6Mk"}`)
	bareJSON := fmt.Sprintf(`{"car":%q,"size":%d,"md5":%q,"urls":[%q],"source":{"space":"did:key:z6Mk"}}`,
		bare.Car, bare.Size, bare.MD5, bare.URLs[0])
	seeds := []string{
		one,
		"[" + one + "," + two + "]",
		"  \n" + bareJSON + "\n",
		"[" + bareJSON + ",{\"car\":\"nope\"},{\"type\":\"tick\",\"version\":1}]",
		`{"type":"car.replicated","version":2,"car":"x"}`,
		`{"car": 7}`,
		`[]`,
		`[1,"two",null]`,
		`{"car":"` + bare.Car + `"} trailing`,
		`null`,
		`"text"`,
	}
	raw := make([][]byte, len(seeds))
	for i, s := range seeds {
		raw[i] = []byte(s)
	}
	mutate.WriteSeeds(tb, "FuzzCarsBody", raw)
}
