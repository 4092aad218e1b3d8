package events

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestContentIDsAreBoundedAndTellEveryDifferenceApart: ids of events whose
// content matters differ whenever a field the fold reads differs, however
// long the content, and never grow past a fixed size.
func TestContentIDsAreBoundedAndTellEveryDifferenceApart(t *testing.T) {
	var deals []Deal
	for i := range 2000 {
		deals = append(deals, Deal{Provider: fmt.Sprintf("f0%d", 100000+i), DealID: uint64(i + 1)})
	}
	long := strings.Repeat("x", 100000)
	cases := []struct {
		name string
		a, b Event
	}{
		{"a report with one more deal", &DealReport{Aggregate: "1", Status: StatusPublished, Deals: deals[:1999]},
			&DealReport{Aggregate: "1", Status: StatusPublished, Deals: deals}},
		{"a failure with another reason past any cut", &DealReport{Aggregate: "1", Status: StatusFailed, Reason: long + "a"},
			&DealReport{Aggregate: "1", Status: StatusFailed, Reason: long + "b"}},
		{"parts that join alike", &AggregateClose{Aggregate: 1, By: "1/a"}, &AggregateClose{Aggregate: 11, By: "/a"}},
		{"an offer failure with another reason", &OfferFailed{Aggregate: 1, Reason: long + "a"}, &OfferFailed{Aggregate: 1, Reason: long + "b"}},
		{"a piece with another size", &CarPiece{Car: "c", Piece: "p", PieceSize: 1 << 20}, &CarPiece{Car: "c", Piece: "p", PieceSize: 1 << 21}},
		{"an invalid CAR with another reason", &CarInvalid{Car: "c", Reason: "md5"}, &CarInvalid{Car: "c", Reason: "size"}},
		{"CARs that differ past the cut", &CarInvalid{Car: long + "a"}, &CarInvalid{Car: long + "b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := BoundedID(tc.a.MsgID()), BoundedID(tc.b.MsgID())
			if a == b {
				t.Fatalf("both have id %q", a)
			}
			for _, id := range []string{a, b} {
				if len(id) > maxIDPrefix+1+digestLen || strings.ContainsAny(id, " \r\n") {
					t.Fatalf("id of %d bytes or with spaces: %q", len(id), id)
				}
			}
		})
	}
	// A report naming the aggregate by its other piece CID, or with
	// another expiration (not how the fold knows a deal), is a retry.
	same := &DealReport{Aggregate: "bafk", AggregateID: 7, Status: StatusPublished, Deals: deals[:3]}
	retry := &DealReport{Aggregate: "baga", AggregateID: 7, Status: StatusPublished, Deals: slices.Clone(deals[:3])}
	retry.Deals[0].ExpirationEpoch = 99
	if same.MsgID() != retry.MsgID() || !strings.HasPrefix(same.MsgID(), "deal.report/7/published/") {
		t.Fatalf("one report by v1 and v2 piece: %q and %q", same.MsgID(), retry.MsgID())
	}
}

func TestTruncateIDKeepsLongIdsApart(t *testing.T) {
	long := strings.Repeat("y", 1000)
	a, b := BoundedID(long+"a"), BoundedID(long+"b")
	if a == b || len(a) != 512 || len(b) != 512 {
		t.Fatalf("%d %d bytes, equal %v", len(a), len(b), a == b)
	}
}
