package events_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/piece"
)

// fuzzDealSizes are the deal sizes a car.replicated is validated against:
// the smallest ferry allows, a test size, and the default.
var fuzzDealSizes = []uint64{4 << 10, 8 << 20, 32 << 30}

// FuzzDecode holds the event decoder to its contract on any bytes:
//
//   - Decode never panics; it returns an event or an error, not both;
//   - a decoded event encodes, and Encode∘Decode is a fixpoint from there
//     (what a publisher re-encodes is what the fold reads back);
//   - a car.replicated validates, or gives a reason, for every deal size,
//     and gives the same answer after the round trip;
//   - a valid car.replicated keeps its facts through the round trip, fits
//     the deal (its size is at most what the largest piece holds), and a
//     claimed piece agrees with its size and has a v2 CID.
//
// The seed corpus is testdata/fuzz/FuzzDecode; regenerate it with
// FERRY_WRITE_FUZZ_SEEDS=1 go test -run FuzzDecode ./events/.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{}`))
	mutate.WriteSeeds(f, "FuzzDecode", decodeSeeds(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := events.Decode(data)
		if err != nil {
			if ev != nil {
				t.Fatalf("Decode returned an event and an error: %v", err)
			}
			return
		}
		if ev == nil {
			t.Fatal("Decode returned neither an event nor an error")
		}
		enc, err := events.Encode(ev)
		if err != nil {
			t.Fatalf("decoded %T does not encode: %v", ev, err)
		}
		ev2, err := events.Decode(enc)
		if err != nil {
			t.Fatalf("encoded event does not decode: %v\n%s", err, enc)
		}
		enc2, err := events.Encode(ev2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode∘Decode is not a fixpoint: %v\n%s\n%s", err, enc, enc2)
		}
		if ev.Kind() != ev2.Kind() || ev.MsgID() != ev2.MsgID() {
			t.Fatalf("round trip changed kind or message id: %s %q → %s %q", ev.Kind(), ev.MsgID(), ev2.Kind(), ev2.MsgID())
		}
		cr, ok := ev.(*events.CarReplicated)
		if !ok {
			return
		}
		cr2 := ev2.(*events.CarReplicated)
		for _, deal := range fuzzDealSizes {
			reason := reasonOf(cr.Validate(aggregator.DealRoom(deal)))
			if again := reasonOf(cr2.Validate(aggregator.DealRoom(deal))); again != reason {
				t.Fatalf("deal %d: Validate says %q, after the round trip %q", deal, reason, again)
			}
			if reason != "" {
				continue
			}
			checkValid(t, cr, cr2, deal)
		}
	})
}

// checkValid holds a car.replicated that Validate accepted for deal.
func checkValid(t *testing.T, cr, cr2 *events.CarReplicated, deal uint64) {
	t.Helper()
	if cr.Car != cr2.Car || cr.Size != cr2.Size || cr.MD5 != cr2.MD5 || !slices.Equal(cr.URLs, cr2.URLs) ||
		cr.Piece != cr2.Piece || cr.PieceSize != cr2.PieceSize || cr.ReplicatedAt != cr2.ReplicatedAt {
		t.Fatalf("round trip changed a valid event:\n%+v\n%+v", cr, cr2)
	}
	if most := piece.Unpadded(frc58.MaxPiece(deal)); cr.Size > most {
		t.Fatalf("deal %d: valid event of %d bytes, more than the %d bytes the largest piece (%d) holds",
			deal, cr.Size, most, frc58.MaxPiece(deal))
	}
	if padded := piece.PaddedSize(cr.Size); padded < cr.Size || padded > frc58.MaxPiece(deal) {
		t.Fatalf("deal %d: size %d pads to %d", deal, cr.Size, padded)
	}
	if cr.Piece == "" {
		return
	}
	c, err := cr.Commitment()
	if err != nil {
		t.Fatalf("valid event's piece does not check: %v", err)
	}
	if c.Padded != piece.PaddedSize(cr.Size) || c.Payload != cr.Size {
		t.Fatalf("valid event's piece is %d padded / %d payload for a %d byte CAR", c.Padded, c.Payload, cr.Size)
	}
	if _, err := c.V2(); err != nil {
		t.Fatalf("valid event's piece has no v2 CID (the fold would reject it): %v", err)
	}
}

// decodeSeeds are one good example of every event type and the edges of
// car.replicated validation.
func decodeSeeds(tb testing.TB) [][]byte {
	enc := func(ev events.Event) []byte { return testutil.MustEncode(ev) }
	withPiece := testutil.Replicated(1, 1000, true)
	v1 := testutil.Replicated(2, 5000, false)
	p := testutil.FakePiece(2, 5000)
	v1.Piece, v1.PieceSize = p.V1().String(), p.Padded
	noPiece := testutil.Replicated(3, 3000, false)
	noPiece.Source = []byte(`{"space":"did:key:z6Mk"}`)
	seeds := [][]byte{
		enc(withPiece), enc(v1), enc(noPiece),
		enc(&events.CarPiece{Car: noPiece.Car, Piece: testutil.FakePiece(3, 3000).MustV2().String()}),
		enc(&events.CarInvalid{Car: noPiece.Car, Reason: "md5 mismatch"}),
		[]byte(`{"type":"tick","version":1,"time":"2026-11-22T12:00:00.123456789+01:00"}`),
		enc(&events.AggregateClose{Aggregate: 3, By: "operator"}),
		enc(&events.DealOffered{Aggregate: 3, Piece: p.MustV2().String(), Engine: "spade"}),
		enc(&events.OfferFailed{Aggregate: 3, Reason: "engine: 400"}),
		enc(&events.DealReport{Aggregate: "3", Status: events.StatusActive, Deals: []events.Deal{{Provider: "f01000", DealID: 7, ExpirationEpoch: 9}}}),
		enc(&events.DealReport{Aggregate: p.V1().String(), Status: events.StatusFailed, Reason: "no provider", AggregateID: 3}),
		// Edges: wrong version, unknown type, case-folded keys, nulls,
		// sizes at and past the limits, v2 piece disagreeing with size.
		[]byte(`{"type":"car.replicated","version":2}`),
		[]byte(`{"type":"car.sealed","version":1}`),
		[]byte(`{"TYPE":"car.replicated","Version":1,"CAR":"` + noPiece.Car + `","size":1,"md5":"` + noPiece.MD5 + `","urls":["http://a"],"source":null}`),
		[]byte(`{"type":"car.replicated","version":1,"car":"` + noPiece.Car + `","size":145249953336295681,"md5":"` + noPiece.MD5 + `","urls":["http://a/b.car"]}`),
		[]byte(`{"type":"car.replicated","version":1,"car":"` + noPiece.Car + `","size":2032,"md5":"` + noPiece.MD5 + `","urls":["https://a/b.car"]}`),
		[]byte(`{"type":"car.replicated","version":1,"car":"` + noPiece.Car + `","size":1000,"md5":"` + noPiece.MD5 + `","urls":["https://a/b.car"],"piece":"` + p.MustV2().String() + `"}`),
		[]byte(`{"type":"car.replicated","version":1,"car":"` + noPiece.Car + `","size":1,"md5":"` + noPiece.MD5 + `","urls":["https://a"],"source":{ "space" : "did:key:x" }}`),
		[]byte(`{"type":"tick","version":1,"time":"0000-01-01T00:00:00Z"}`),
		[]byte(`{"type":"deal.report","version":1,"aggregate":"` + p.V1().String() + `","status":"active","deals":[{"provider":"f01000","dealId":1}],"aggregateId":18446744073709551615}`),
	}
	return seeds
}
