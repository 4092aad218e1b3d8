package spade

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/wire"
	"github.com/ipfs/go-cid"
)

// Offer is what ferry POSTs to the deal engine for one full aggregate:
//
//	{"aggregate": 7,
//	 "piece": "bafkzcib…",                 (aggregate piece CID v2)
//	 "pieceV1": "baga6ea4sea…",            (the same piece as CID v1)
//	 "pieceSize": 34359738368,             (padded deal size)
//	 "dealSize": 34359738368,              (the same)
//	 "pieces": [{"car": "bagbaiera…", "piece": "bafkzcib…", "pieceSize": 1073741824,
//	             "size": 1000000000, "md5": "9e107d9d…", "urls": ["https://…"],
//	             "offset": 0}, …],           (layout order)
//	 "manifest": {…},                       (FRC-58 manifest, see Manifest)
//	 "reportUrl": "http://ferry.example/v1/deals/report"}
type Offer struct {
	// Aggregate is ferry's numeric id of the aggregate.
	Aggregate uint64 `json:"aggregate"`
	// Piece is the aggregate's piece CID v2 (FRC-0069); it identifies the
	// offer: a repeat offer of the same piece is the same offer.
	Piece string `json:"piece"`
	// PieceV1 is the same piece as a v1 CID, for engines that predate v2.
	PieceV1 string `json:"pieceV1"`
	// PieceSize and DealSize are both the padded deal size.
	PieceSize uint64 `json:"pieceSize"`
	DealSize  uint64 `json:"dealSize"`
	// Pieces are the CARs in layout order.
	Pieces   []OfferPiece `json:"pieces"`
	Manifest Manifest     `json:"manifest"`
	// ReportURL is where the engine POSTs its Report.
	ReportURL string `json:"reportUrl"`
	// Nth says which offer of the aggregate this is (1 for the first),
	// for ferry's own record (deal.offered); it is not sent.
	Nth int `json:"-"`
}

// OfferPiece is one CAR of an offer and where its piece sits in the deal.
type OfferPiece struct {
	Car string `json:"car"`
	// Piece is the CAR's piece CID v2.
	Piece string `json:"piece"`
	// PieceSize is the piece's padded size.
	PieceSize uint64 `json:"pieceSize"`
	// Size is the CAR's size in bytes.
	Size uint64 `json:"size"`
	// MD5 is the hex md5 of the CAR's bytes.
	MD5 string `json:"md5"`
	// URLs are where the CAR can be downloaded; any one will do.
	URLs []string `json:"urls"`
	// Offset is the piece's padded offset in the deal.
	Offset uint64 `json:"offset"`
}

// OfferOf is the one builder of offers: the offer of a closed aggregate
// from its layout in the read models (projections.Store.Layout), agg and
// its CARs in layout order, each with its piece, padded size and offset.
// It copies what the fold decided and checks nothing: Offerer.Offer
// validates an offer before it is sent.
func OfferOf(agg *wire.AggregateView, cars []wire.CarView, reportURL string) *Offer {
	o := &Offer{Aggregate: agg.ID, Piece: agg.Piece, PieceV1: agg.PieceV1, PieceSize: agg.PieceSize,
		DealSize: agg.DealSize, ReportURL: reportURL, Nth: agg.Offers + 1}
	for _, c := range cars {
		p := OfferPiece{Car: c.Car, Piece: c.Piece, PieceSize: c.PieceSize, Size: c.Size, MD5: c.MD5, URLs: c.URLs}
		if c.Offset != nil {
			p.Offset = *c.Offset
		}
		o.Pieces = append(o.Pieces, p)
	}
	o.Manifest = ManifestOf(o)
	return o
}

// ReadOffer builds the offer of READY aggregate id from the read models.
// An aggregate in any other state is not offered: an error says which
// state it is in.
func ReadOffer(s *projections.Store, id uint64, reportURL string) (*Offer, error) {
	agg, cars, _, err := s.Layout(id)
	if err != nil {
		return nil, err
	}
	if agg.State != aggregator.Ready {
		return nil, fmt.Errorf("aggregate %d is %s, not READY", id, agg.State)
	}
	return OfferOf(agg, cars, reportURL), nil
}

// Commitment is the offer's aggregate piece, parsed.
func (o *Offer) Commitment() (piece.Commitment, error) {
	return piece.Parse(o.Piece, o.DealSize)
}

// Validate checks the offer against the wire contract: every CID parses
// and agrees with its sizes, the pieces are aligned, in order and fit
// beside the index, and the URLs are http(s). It does not check any bytes.
// The error wraps ErrBadOffer and names the field.
func (o *Offer) Validate() error {
	if reason := o.check(); reason != "" {
		return fmt.Errorf("%w: %s", ErrBadOffer, reason)
	}
	return nil
}

func (o *Offer) check() string {
	if !piece.ValidPadded(o.DealSize) {
		return fmt.Sprintf("dealSize: %d is not a power of two ≥ 128", o.DealSize)
	}
	if o.DealSize <= frc58.IndexReserve(o.DealSize) {
		return fmt.Sprintf("dealSize: %d leaves no room beside the data segment index", o.DealSize)
	}
	if o.PieceSize != o.DealSize {
		return fmt.Sprintf("pieceSize: %d differs from dealSize %d", o.PieceSize, o.DealSize)
	}
	if reason := o.checkPiece(); reason != "" {
		return reason
	}
	if n, max := len(o.Pieces), frc58.MaxEntries(o.DealSize); n == 0 || n > max {
		return fmt.Sprintf("pieces: %d given, want 1 to %d", n, max)
	}
	var end uint64
	for i := range o.Pieces {
		if reason := o.Pieces[i].check(end, o.DealSize); reason != "" {
			return fmt.Sprintf("pieces[%d]: %s", i, reason)
		}
		end = o.Pieces[i].Offset + o.Pieces[i].PieceSize
	}
	if reason := o.checkManifest(); reason != "" {
		return reason
	}
	return checkURL("reportUrl", o.ReportURL)
}

func (o *Offer) checkPiece() string {
	c, err := o.Commitment()
	if err != nil {
		return fmt.Sprintf("piece: %v", err)
	}
	if c.Payload == 0 {
		return "piece: want a piece CID v2"
	}
	if o.PieceV1 != "" && o.PieceV1 != c.V1().String() {
		return fmt.Sprintf("pieceV1: %s is not the v1 form of piece %s", o.PieceV1, o.Piece)
	}
	return ""
}

// check validates one piece that may start no earlier than from.
func (p *OfferPiece) check(from, dealSize uint64) string {
	if _, err := cid.Decode(p.Car); err != nil {
		return fmt.Sprintf("car: %q is not a CID", p.Car)
	}
	if p.Size == 0 {
		return "size: must be at least 1 byte"
	}
	c, err := events.CheckPiece(p.Piece, p.PieceSize, p.Size)
	if err != nil {
		return err.Error()
	}
	if p.PieceSize != c.Padded {
		return fmt.Sprintf("pieceSize: %d, the piece is %d", p.PieceSize, c.Padded)
	}
	if _, err := hex.DecodeString(p.MD5); err != nil || len(p.MD5) != 32 {
		return fmt.Sprintf("md5: want 32 hex digits, got %q", p.MD5)
	}
	if p.Offset%p.PieceSize != 0 || p.Offset < from {
		return fmt.Sprintf("offset: %d is not a multiple of %d at or after %d", p.Offset, p.PieceSize, from)
	}
	// Written so that a huge offset cannot wrap around and pass.
	if room := dealSize - frc58.IndexReserve(dealSize); p.Offset > room || p.PieceSize > room-p.Offset {
		return fmt.Sprintf("offset: a %d byte piece at %d does not end within the %d bytes before the index", p.PieceSize, p.Offset, room)
	}
	if len(p.URLs) == 0 {
		return "urls: at least one is needed"
	}
	for i, u := range p.URLs {
		if reason := checkURL("urls["+strconv.Itoa(i)+"]", u); reason != "" {
			return reason
		}
	}
	return ""
}

// checkManifest accepts an empty manifest (the engine can derive it) or
// one that names the offer's pieces in the offer's order.
func (o *Offer) checkManifest() string {
	m := o.Manifest
	if m.Aggregate == "" && len(m.Pieces) == 0 {
		return ""
	}
	if m.Aggregate != o.Piece {
		return fmt.Sprintf("manifest: frc58_aggregate %s is not piece %s", m.Aggregate, o.Piece)
	}
	if len(m.Pieces) != len(o.Pieces) {
		return fmt.Sprintf("manifest: %d entries for %d pieces", len(m.Pieces), len(o.Pieces))
	}
	for i, p := range m.Pieces {
		if p.PieceCID != o.Pieces[i].Piece {
			return fmt.Sprintf("manifest: piece_list[%d] is %s, pieces[%d] is %s", i, p.PieceCID, i, o.Pieces[i].Piece)
		}
	}
	return ""
}

func checkURL(field, s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Sprintf("%s: %q is not an http(s) URL", field, s)
	}
	return ""
}
