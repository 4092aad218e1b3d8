package events_test

import (
	"errors"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// reasonOf is the reason an error from Validate, Check or CheckPiece
// carries, "" for none.
func reasonOf(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestARefusalIsAnInvalidErrorWhoseMessageIsTheReason: every refusal of
// Validate, Check, CheckPiece and CarCID is an *InvalidError, and its
// message is the reason alone (the text the fold records), with no prefix.
func TestARefusalIsAnInvalidErrorWhoseMessageIsTheReason(t *testing.T) {
	const deal = 8 << 20
	good := testutil.Replicated(1, 3000, true)
	if err := good.Validate(aggregator.DealRoom(deal)); err != nil {
		t.Fatalf("a good event: %v", err)
	}
	if chk, err := good.Check(aggregator.DealRoom(deal)); err != nil || chk.Car != good.Car {
		t.Fatalf("Check of a good event: %+v %v", chk, err)
	}
	noMD5 := *good
	noMD5.MD5 = ""
	otherPayload := *good
	otherPayload.Piece = testutil.FakePiece(1, 3001).MustV2().String() // same padded size
	_, checkErr := otherPayload.Check(aggregator.DealRoom(deal))
	_, commitmentErr := otherPayload.Commitment()
	_, pieceErr := events.CheckPiece(good.Piece, 0, 3001)
	_, carErr := events.CarCID("")
	cases := []struct {
		name, reason string
		err          error
	}{
		{"Validate", "md5: want 32 hex digits, got 0 characters", noMD5.Validate(aggregator.DealRoom(deal))},
		{"Check", "piece: v2 CID is for a 3001 byte payload, size says 3000", checkErr},
		{"Commitment", "piece: v2 CID is for a 3001 byte payload, size says 3000", commitmentErr},
		{"CheckPiece", "piece: v2 CID is for a 3000 byte payload, size says 3001", pieceErr},
		{"CarCID", "car: missing", carErr},
	}
	for _, tc := range cases {
		var invalid *events.InvalidError
		if !errors.As(tc.err, &invalid) {
			t.Errorf("%s: %T %v, want an *InvalidError", tc.name, tc.err, tc.err)
			continue
		}
		if tc.err.Error() != tc.reason || invalid.Reason != tc.reason {
			t.Errorf("%s: message %q, reason %q, want %q", tc.name, tc.err.Error(), invalid.Reason, tc.reason)
		}
	}
}
