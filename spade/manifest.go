package spade

import (
	"fmt"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/projections"
)

// Manifest is the FRC-58 manifest of an aggregate: its piece and, in layout
// order, each piece with the URLs its bytes can be fetched from.
//
//	{"frc58_aggregate": "bafkzcib…",
//	 "piece_list": [{"pcid_v2": "bafkzcib…", "sources": ["https://…"]}]}
type Manifest struct {
	Aggregate string          `json:"frc58_aggregate"`
	Pieces    []ManifestPiece `json:"piece_list"`
}

// ManifestPiece is one entry of a Manifest's piece_list.
type ManifestPiece struct {
	PieceCID string   `json:"pcid_v2"`
	Sources  []string `json:"sources"`
}

// ManifestOf is the FRC-58 manifest describing an offer.
func ManifestOf(o *Offer) Manifest {
	m := Manifest{Aggregate: o.Piece, Pieces: make([]ManifestPiece, len(o.Pieces))}
	for i, p := range o.Pieces {
		m.Pieces[i] = ManifestPiece{PieceCID: p.Piece, Sources: p.URLs}
	}
	return m
}

// ReadManifest builds the FRC-58 manifest of the aggregate ref names (its
// decimal id or piece CID) from the read models, with the offer builder.
// An INGESTING aggregate has no manifest yet: its layout is not fixed; a
// RELEASED one never has one (its CARs went to the shared pool). The
// error then wraps projections.ErrNotFound.
func ReadManifest(s *projections.Store, ref string) (*Manifest, error) {
	a, err := s.Aggregate(ref, 0, 0)
	if err != nil {
		return nil, err
	}
	switch a.State {
	case aggregator.Ingesting:
		return nil, fmt.Errorf("aggregate %d is INGESTING, its layout is not fixed: %w", a.ID, projections.ErrNotFound)
	case aggregator.Released:
		return nil, fmt.Errorf("aggregate %d is RELEASED, its CARs went to the shared pool: %w", a.ID, projections.ErrNotFound)
	}
	agg, cars, _, err := s.Layout(a.ID)
	if err != nil {
		return nil, err
	}
	m := OfferOf(agg, cars, "").Manifest
	return &m, nil
}
