package spade

import (
	"errors"
	"testing"

	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
)

// FuzzParseReport holds ParseReport, the decoder of what a deal engine
// POSTs to /v1/deals/report, to its contract on any body: no panic; a
// refusal wraps ErrBadReport or ErrTooLarge; an accepted report is a
// complete deal.report (known status, an aggregate reference, deals with
// provider and id, or a reason for a failure) that ferry can publish, that
// the fold's decoder reads back unchanged, and that ParseReport accepts
// again with the same message id.
//
// Seed corpus: testdata/fuzz/FuzzParseReport (FERRY_WRITE_FUZZ_SEEDS=1
// regenerates it).
func FuzzParseReport(f *testing.F) {
	f.Add([]byte(`{}`))
	mutate.WriteSeeds(f, "FuzzParseReport", reportSeeds())
	f.Fuzz(func(t *testing.T, body []byte) {
		rep, err := ParseReport(body)
		if err != nil {
			if rep != nil {
				t.Fatalf("report and error: %v", err)
			}
			if !errors.Is(err, ErrBadReport) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error wraps neither ErrBadReport nor ErrTooLarge: %v", err)
			}
			return
		}
		if rep.Type != events.TypeDealReport || rep.Version != events.Version || rep.Aggregate == "" {
			t.Fatalf("accepted an incomplete report: %+v", rep)
		}
		switch rep.Status {
		case events.StatusFailed:
			if rep.Reason == "" {
				t.Fatalf("accepted a failure without a reason: %+v", rep)
			}
		case events.StatusPublished, events.StatusActive:
			if len(rep.Deals) == 0 {
				t.Fatalf("accepted %s without deals", rep.Status)
			}
			for _, d := range rep.Deals {
				if d.Provider == "" || d.DealID == 0 {
					t.Fatalf("accepted a deal without provider or id: %+v", d)
				}
			}
		default:
			t.Fatalf("accepted status %q", rep.Status)
		}
		enc, err := events.Encode(rep)
		if err != nil {
			t.Fatalf("accepted report does not encode: %v", err)
		}
		ev, err := events.Decode(enc)
		if err != nil {
			t.Fatalf("the fold cannot decode the published report: %v\n%s", err, enc)
		}
		back, ok := ev.(*events.DealReport)
		if !ok || back.MsgID() != rep.MsgID() || back.Aggregate != rep.Aggregate || back.Status != rep.Status ||
			back.Reason != rep.Reason || len(back.Deals) != len(rep.Deals) {
			t.Fatalf("published report reads back changed:\n%+v\n%+v", rep, ev)
		}
		again, err := ParseReport(enc)
		if err != nil || again.MsgID() != rep.MsgID() {
			t.Fatalf("ParseReport refuses or changes its own output: %v\n%s", err, enc)
		}
	})
}

func reportSeeds() [][]byte {
	c := fuzzPiece(8 << 20)
	v2, v1 := c.MustV2().String(), c.V1().String()
	return [][]byte{
		[]byte(`{"aggregate":"` + v2 + `","status":"published","deals":[{"provider":"f01000","dealId":12,"expirationEpoch":5000000}]}`),
		[]byte(`{"type":"deal.report","version":1,"aggregate":"` + v1 + `","status":"active","deals":[{"provider":"f01000","dealId":1},{"provider":"f01001","dealId":2}]}`),
		[]byte(`{"aggregate":"17","status":"failed","reason":"no provider took it"}`),
		[]byte(`{"aggregate":"17","status":"failed"}`),
		[]byte(`{"aggregate":"17","status":"published","deals":[]}`),
		[]byte(`{"aggregate":"17","status":"published","deals":[{"provider":"","dealId":3}]}`),
		[]byte(`{"aggregate":"bafy-not-a-piece","status":"active","deals":[{"provider":"f01000","dealId":3}]}`),
		[]byte(`{"type":"deal.offered","aggregate":"17","status":"active","deals":[{"provider":"f01000","dealId":3}]}`),
		[]byte(`{"version":2,"aggregate":"17","status":"active","deals":[{"provider":"f01000","dealId":3}]}`),
		[]byte(`{"aggregate":"18446744073709551615","status":"sealed"}`),
		[]byte(`{"aggregate":"17","status":"active","deals":[{"provider":"f01000","dealId":3}],"aggregateId":99}`),
		[]byte(`[]`),
	}
}

// fuzzPiece is an aggregate-sized commitment with a fixed root.
func fuzzPiece(padded uint64) piece.Commitment {
	var root [32]byte
	for i := range root {
		root[i] = byte(i * 7)
	}
	root[31] &= 0x3f
	return piece.Commitment{Root: root, Padded: padded, Payload: piece.Unpadded(padded)}
}
