package spade

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestOfferOfDescribesTheAggregate(t *testing.T) {
	f := newFixture(t, SimConfig{})
	cars := f.layout()
	o := f.offer(t, 3, cars)
	want, err := o.Commitment()
	if err != nil {
		t.Fatal(err)
	}
	if o.PieceV1 != want.V1().String() || o.PieceSize != testDealSize || o.DealSize != testDealSize {
		t.Fatalf("offer %s / %s / %d / %d", o.Piece, o.PieceV1, o.PieceSize, o.DealSize)
	}
	var end uint64
	for i, p := range o.Pieces {
		if p.Car != cars[i].CID.String() || p.Piece != cars[i].Piece.MustV2().String() || p.Offset != end {
			t.Fatalf("pieces[%d] = %+v, want %s at %d", i, p, cars[i].CID, end)
		}
		end += p.PieceSize
	}
	m := ManifestOf(o)
	if m.Aggregate != o.Piece || len(m.Pieces) != len(o.Pieces) || m.Pieces[2].PieceCID != o.Pieces[2].Piece {
		t.Fatalf("manifest %+v", m)
	}
	b, _ := json.Marshal(m)
	if !strings.Contains(string(b), `"frc58_aggregate":`) || !strings.Contains(string(b), `"pcid_v2":`) {
		t.Fatalf("manifest JSON %s", b)
	}
}

func TestOfferValidateNamesTheBadField(t *testing.T) {
	f := newFixture(t, SimConfig{})
	tests := []struct {
		name   string
		tamper func(o *Offer)
		want   string
	}{
		{"a deal size that is not a power of two is bad", func(o *Offer) { o.DealSize = 1000 }, "dealSize:"},
		{"a piece size other than the deal size is bad", func(o *Offer) { o.PieceSize /= 2 }, "pieceSize:"},
		{"an aggregate piece that is not a CID is bad", func(o *Offer) { o.Piece = "nope" }, "piece:"},
		{"a v1 form of another piece is bad", func(o *Offer) { o.PieceV1 = o.Pieces[0].Piece }, "pieceV1:"},
		{"an offer without pieces is bad", func(o *Offer) { o.Pieces = nil; o.Manifest = Manifest{} }, "pieces: 0 given"},
		{"a CAR that is not a CID is bad", func(o *Offer) { o.Pieces[0].Car = "x" }, "pieces[0]: car:"},
		{"a piece that does not match the CAR size is bad", func(o *Offer) { o.Pieces[1].Size++ }, "pieces[1]: piece:"},
		{"a piece size that disagrees with the piece is bad", func(o *Offer) { o.Pieces[1].PieceSize = 0 }, "pieces[1]: pieceSize:"},
		{"an md5 that is not hex is bad", func(o *Offer) { o.Pieces[2].MD5 = "zz" }, "pieces[2]: md5:"},
		{"overlapping pieces are bad", func(o *Offer) { o.Pieces[1].Offset = 0 }, "pieces[1]: offset:"},
		{"a deal too small for its index is bad", func(o *Offer) { o.DealSize, o.PieceSize = 256, 256 }, "no room beside"},
		{"an offset that would wrap around is bad", func(o *Offer) { o.Pieces[3].Offset = -o.Pieces[3].PieceSize }, "pieces[3]: offset:"},
		{"a piece in the index area is bad", func(o *Offer) { o.Pieces[3].Offset = testDealSize - o.Pieces[3].PieceSize }, "before the index"},
		{"a piece without URLs is bad", func(o *Offer) { o.Pieces[0].URLs = nil }, "pieces[0]: urls:"},
		{"a file URL is bad", func(o *Offer) { o.Pieces[0].URLs = []string{"file:///etc/passwd"} }, "pieces[0]: urls[0]:"},
		{"a manifest of another piece is bad", func(o *Offer) { o.Manifest.Aggregate = o.Pieces[0].Piece }, "manifest:"},
		{"a missing report URL is bad", func(o *Offer) { o.ReportURL = "" }, "reportUrl:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.offer(t, 1, f.layout())
			tt.tamper(o)
			err := o.Validate()
			if !errors.Is(err, ErrBadOffer) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want ErrBadOffer naming %q", err, tt.want)
			}
		})
	}
}
