package projections

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/frc58"
	"github.com/ferry-dev/ferry/piece"
	bolt "go.etcd.io/bbolt"
)

// Car returns the view of a CAR by its canonical CID string: its own state
// until it is in a closed aggregate, then the aggregate's state, with its
// inclusion proof and deals.
func (s *Store) Car(car string) (*CarView, error) {
	var out *CarView
	err := s.db.View(func(tx *bolt.Tx) error {
		w := &writer{tx: tx, dealSize: s.dealSize}
		c, err := w.car(car)
		if err != nil {
			return err
		}
		if c.Aggregate != 0 && c.State != aggregator.Rejected {
			a, err := w.agg(c.Aggregate)
			if err != nil {
				return err
			}
			if a.State != aggregator.Ingesting {
				c.State = a.State
			}
			c.Deals = a.Deals
		}
		if enc := tx.Bucket(bProofs).Get([]byte(car)); enc != nil {
			if c.Inclusion, err = inclusionView(enc); err != nil {
				return err
			}
		}
		out = c
		return nil
	})
	return out, err
}

func inclusionView(enc []byte) (*InclusionView, error) {
	p, err := frc58.DecodeProof(enc)
	if err != nil {
		return nil, err
	}
	path := func(nodes []([32]byte)) []string {
		out := make([]string, len(nodes))
		for i, n := range nodes {
			out[i] = hex.EncodeToString(n[:])
		}
		return out
	}
	sub := make([][32]byte, len(p.ProofSubtree.Path))
	for i, n := range p.ProofSubtree.Path {
		sub[i] = n
	}
	idx := make([][32]byte, len(p.ProofIndex.Path))
	for i, n := range p.ProofIndex.Path {
		idx[i] = n
	}
	return &InclusionView{
		Subtree: ProofPath{Index: p.ProofSubtree.Index, Path: path(sub)},
		Index:   ProofPath{Index: p.ProofIndex.Index, Path: path(idx)},
		CBOR:    append([]byte(nil), enc...),
	}, nil
}

// Proof returns a CAR's inclusion proof in CBOR, or ErrNotFound before its
// aggregate is closed.
func (s *Store) Proof(car string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bProofs).Get([]byte(car))
		if v == nil {
			return fmt.Errorf("proof of %s: %w", car, ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// Aggregate returns an aggregate by numeric id or piece CID, with up to
// limit pieces of its layout after position after (-1 for the start). An
// INGESTING aggregate lists its CARs in arrival order, without offsets.
func (s *Store) Aggregate(ref string, after, limit int) (*AggregateView, error) {
	var out *AggregateView
	err := s.db.View(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		w := &writer{tx: tx, dealSize: s.dealSize}
		a, err := w.agg(id)
		if err != nil {
			return err
		}
		if limit > 0 {
			if err := w.page(a, after, limit); err != nil {
				return err
			}
		}
		out = a
		return nil
	})
	return out, err
}

func resolve(tx *bolt.Tx, ref string) (uint64, error) {
	if id, err := strconv.ParseUint(ref, 10, 64); err == nil {
		return id, nil
	}
	if v := tx.Bucket(bByPiece).Get([]byte(ref)); v != nil {
		return u64(v), nil
	}
	if _, err := piece.Parse(ref, 0); err != nil && err != piece.ErrSizeNeeded {
		return 0, fmt.Errorf("%w: %q is neither an aggregate id nor a piece CID", ErrBadRef, ref)
	}
	return 0, fmt.Errorf("aggregate %s: %w", ref, ErrNotFound)
}

// page fills a.Pieces with up to limit pieces after position after.
func (w *writer) page(a *AggregateView, after, limit int) error {
	bucket := bLayout
	closed := a.State != aggregator.Ingesting
	if !closed {
		bucket = bMembers
	}
	cur := w.tx.Bucket(bucket).Cursor()
	prefix := be64(a.ID)
	pos := after + 1
	for k, v := cur.Seek(key2(a.ID, pos)); k != nil && string(k[:8]) == string(prefix); k, v = cur.Next() {
		if len(a.Pieces) == limit {
			a.Next = &pos
			return nil
		}
		c, err := w.car(string(v))
		if err != nil {
			return err
		}
		pv := PieceView{Car: c.Car, Piece: c.Piece, PieceSize: c.PieceSize}
		if closed {
			pv.Offset = c.Offset
			if c.Aggregate != a.ID { // moved on after a failed deal
				pv.Offset = nil
			}
		}
		a.Pieces = append(a.Pieces, pv)
		pos++
	}
	return nil
}

// Aggregates lists aggregates with id > after, optionally only in state,
// up to limit, without their pieces.
func (s *Store) Aggregates(state string, after uint64, limit int) ([]AggregateView, error) {
	var out []AggregateView
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bAggs).Cursor()
		for k, v := cur.Seek(be64(after + 1)); k != nil && len(out) < limit; k, v = cur.Next() {
			var a AggregateView
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if state == "" || a.State == state {
				out = append(out, a)
			}
		}
		return nil
	})
	return out, err
}

// Layout returns a closed aggregate and all its CARs in layout order, with
// their inclusion proofs (CBOR) — what an offer or a receipt needs.
func (s *Store) Layout(id uint64) (*AggregateView, []CarView, [][]byte, error) {
	var (
		agg    *AggregateView
		cars   []CarView
		proofs [][]byte
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		w := &writer{tx: tx, dealSize: s.dealSize}
		a, err := w.agg(id)
		if err != nil {
			return err
		}
		if a.State == aggregator.Ingesting {
			return fmt.Errorf("aggregate %d is INGESTING: %w", id, ErrNotFound)
		}
		cur := tx.Bucket(bLayout).Cursor()
		prefix := be64(id)
		for k, v := cur.Seek(prefix); k != nil && string(k[:8]) == string(prefix); k, v = cur.Next() {
			c, err := w.car(string(v))
			if err != nil {
				return err
			}
			cars = append(cars, *c)
			proofs = append(proofs, append([]byte(nil), tx.Bucket(bProofs).Get(v)...))
		}
		agg = a
		return nil
	})
	return agg, cars, proofs, err
}

// Queued calls fn with every CAR waiting for its piece.
func (s *Store) Queued(fn func(CarView) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		w := &writer{tx: tx, dealSize: s.dealSize}
		return tx.Bucket(bQueued).ForEach(func(k, _ []byte) error {
			c, err := w.car(string(k))
			if err != nil {
				return err
			}
			return fn(*c)
		})
	})
}
