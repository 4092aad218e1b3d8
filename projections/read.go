package projections

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
	"github.com/filecoin-project/go-data-segment/merkletree"
	bolt "go.etcd.io/bbolt"
)

// Car returns the view of a CAR by its canonical CID string: its own state
// until it is in a closed aggregate, then the aggregate's state, with its
// position, offset, inclusion proof and deals.
func (s *Store) Car(car string) (*wire.CarView, error) {
	c, proof, err := s.car(car)
	if err != nil || proof == nil {
		return c, err
	}
	c.Inclusion, err = Inclusion(proof)
	return c, err
}

// AppendCarJSON appends what json.Marshal of Car(car) gives, rendering
// the proof straight from the tree: the status API's path, which would
// otherwise build the proof's strings only to encode them.
func (s *Store) AppendCarJSON(dst []byte, car string) ([]byte, error) {
	c, proof, err := s.car(car)
	if err != nil {
		return nil, err
	}
	return appendCarJSON(dst, c, proof)
}

// car is a CAR's view without its inclusion proof, and the proof.
func (s *Store) car(car string) (*wire.CarView, *frc58.Proof, error) {
	var (
		out   *wire.CarView
		proof *frc58.Proof
	)
	err := s.viewCar(car, func(tx *bolt.Tx, r *carRecord) error {
		c := &r.view
		if c.Aggregate != 0 && c.State != aggregator.Rejected {
			a, err := s.aggView(tx, c.Aggregate)
			if err != nil {
				return err
			}
			if a.State != aggregator.Ingesting {
				c.State = a.State
				if proof, err = placed(tx, a, r); err != nil {
					return err
				}
			}
			c.Deals = a.Deals
		}
		out = c
		return nil
	})
	return out, proof, err
}

// viewCar calls fn with a CAR in a read transaction. The index's memory is
// read before the transaction opens (see cidIndex's rules).
func (s *Store) viewCar(car string, fn func(*bolt.Tx, *carRecord) error) error {
	key := keyOf(car)
	num, ok := s.index.get(key)
	return s.db.View(func(tx *bolt.Tx) error {
		if !ok {
			if num, ok = findStored(tx, key); !ok {
				return fmt.Errorf("CAR %s: %w", car, ErrNotFound)
			}
		}
		r, err := byNumber(tx, num)
		if err != nil {
			return err
		}
		if r.view.Car != car { // another CID's key: not this CAR
			return fmt.Errorf("CAR %s: %w", car, ErrNotFound)
		}
		return fn(tx, r)
	})
}

// placed is closed.place for a CAR of the closed aggregate a, or nil when
// a has no layout.
func placed(tx *bolt.Tx, a *wire.AggregateView, r *carRecord) (*frc58.Proof, error) {
	c, ok, err := openClosed(tx, a.ID)
	if !ok || err != nil {
		return nil, err
	}
	return c.place(a, r)
}

// Inclusion renders a proof: nodes in hex, cut from one string, and the
// CBOR form.
func Inclusion(p *frc58.Proof) (*wire.InclusionView, error) {
	enc, err := frc58.EncodeProof(p)
	if err != nil {
		return nil, err
	}
	sub, idx := p.ProofSubtree.Path, p.ProofIndex.Path
	var all strings.Builder
	all.Grow(64 * (len(sub) + len(idx)))
	var buf [64]byte
	for _, path := range [][]merkletree.Node{sub, idx} {
		for _, n := range path {
			hex.Encode(buf[:], n[:])
			all.Write(buf[:])
		}
	}
	hexes := all.String()
	path := func(from, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = hexes[64*(from+i) : 64*(from+i+1)]
		}
		return out
	}
	return &wire.InclusionView{
		Subtree: wire.ProofPath{Index: p.ProofSubtree.Index, Path: path(0, len(sub))},
		Index:   wire.ProofPath{Index: p.ProofIndex.Index, Path: path(len(sub), len(idx))},
		CBOR:    enc,
	}, nil
}

// Aggregate returns an aggregate by numeric id or piece CID, with up to
// limit pieces of its layout after position after (-1 for the start). An
// INGESTING aggregate lists its CARs in arrival order, without offsets.
func (s *Store) Aggregate(ref string, after, limit int) (*wire.AggregateView, error) {
	var out *wire.AggregateView
	err := s.db.View(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		shared, err := s.aggView(tx, id)
		if err != nil {
			return err
		}
		a := *shared // the cached view is shared: fill a copy
		if limit > 0 {
			if err := page(tx, &a, after, limit); err != nil {
				return err
			}
		}
		out = &a
		return nil
	})
	return out, err
}

func resolve(tx *bolt.Tx, ref string) (uint64, error) {
	if id, err := strconv.ParseUint(ref, 10, 64); err == nil {
		return id, nil
	}
	if v := tx.Bucket(bByPiece).Get([]byte(ref)); v != nil {
		return decodeUint64(v), nil
	}
	if _, err := piece.Parse(ref, 0); err != nil && err != piece.ErrSizeNeeded {
		return 0, fmt.Errorf("%w: %q is neither an aggregate id nor a piece CID", ErrBadRef, ref)
	}
	return 0, fmt.Errorf("aggregate %s: %w", ref, ErrNotFound)
}

// page fills a.Pieces with up to limit pieces after position after: in
// layout order once the aggregate is closed, else in arrival order.
func page(tx *bolt.Tx, a *wire.AggregateView, after, limit int) error {
	pos := max(after+1, 0)
	c, ok, err := openClosed(tx, a.ID)
	if err != nil {
		return err
	}
	if a.State == aggregator.Ingesting || !ok {
		var readErr error
		err := members(tx, a.ID, pos, func(i int, m member) bool {
			if len(a.Pieces) == limit {
				a.Next = &i
				return false
			}
			var r *carRecord
			if r, readErr = byNumber(tx, m.num); readErr != nil {
				return false
			}
			a.Pieces = append(a.Pieces, wire.PieceView{Car: r.view.Car, Piece: r.view.Piece, PieceSize: r.view.PieceSize})
			return true
		})
		return errors.Join(readErr, err)
	}
	for ; pos < c.lay.len(); pos++ {
		if len(a.Pieces) == limit {
			next := pos
			a.Next = &next
			return nil
		}
		var m member
		if err := members(tx, a.ID, c.lay.arrival(pos), func(_ int, got member) bool { m = got; return false }); err != nil {
			return err
		}
		r, err := byNumber(tx, m.num)
		if err != nil {
			return err
		}
		pv := wire.PieceView{Car: r.view.Car, Piece: r.view.Piece, PieceSize: r.view.PieceSize}
		if r.view.Aggregate == a.ID { // else it moved on after a failed deal
			off := c.tree.Offset(pos)
			pv.Offset = &off
		}
		a.Pieces = append(a.Pieces, pv)
	}
	return nil
}

// Aggregates lists aggregates with id > after, optionally only in state,
// up to limit, without their pieces.
func (s *Store) Aggregates(state string, after uint64, limit int) ([]wire.AggregateView, error) {
	return s.AggregatesWhere(AggregateFilter{State: state}, after, limit)
}

// AggregateFilter selects aggregates.
type AggregateFilter struct {
	// State is the state they are in; "" for any.
	State string
	// Group is the group they are filled for, "" the shared pool's; nil
	// for any.
	Group *string
}

func (f AggregateFilter) match(a *wire.AggregateView) bool {
	return (f.State == "" || a.State == f.State) && (f.Group == nil || a.Group == *f.Group)
}

// AggregatesWhere lists the aggregates f selects with id > after, up to
// limit, without their pieces.
func (s *Store) AggregatesWhere(f AggregateFilter, after uint64, limit int) ([]wire.AggregateView, error) {
	var out []wire.AggregateView
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bAggs).Cursor()
		for k, v := cur.Seek(encodeUint64(after + 1)); k != nil && len(out) < limit; k, v = cur.Next() {
			var a wire.AggregateView
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if f.match(&a) {
				out = append(out, a)
			}
		}
		return nil
	})
	return out, err
}

// Layout returns a closed aggregate and all its CARs in layout order, with
// their inclusion proofs — what an offer or a receipt needs. A CAR that
// moved on after a failed deal has no position, offset or proof here.
func (s *Store) Layout(id uint64) (*wire.AggregateView, []wire.CarView, []*frc58.Proof, error) {
	var (
		agg    *wire.AggregateView
		cars   []wire.CarView
		proofs []*frc58.Proof
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		shared, err := s.aggView(tx, id)
		if err != nil {
			return err
		}
		a := *shared
		c, ok, err := openClosed(tx, id)
		if err != nil {
			return err
		}
		if a.State == aggregator.Ingesting || !ok {
			// INGESTING, or RELEASED: never laid out.
			return fmt.Errorf("aggregate %d is %s, it has no layout: %w", id, a.State, ErrNotFound)
		}
		lay := c.lay
		arrived := make([]member, 0, a.Count)
		if err := members(tx, id, 0, func(_ int, m member) bool { arrived = append(arrived, m); return true }); err != nil {
			return err
		}
		if len(arrived) != lay.len() {
			return fmt.Errorf("aggregate %d: %d members, layout of %d", id, len(arrived), lay.len())
		}
		cars, proofs = make([]wire.CarView, lay.len()), make([]*frc58.Proof, lay.len())
		for pos := range cars {
			r, err := byNumber(tx, arrived[lay.arrival(pos)].num)
			if err != nil {
				return err
			}
			if proofs[pos], err = c.place(&a, r); err != nil {
				return err
			}
			cars[pos] = r.view
		}
		agg = &a
		return nil
	})
	return agg, cars, proofs, err
}

// Queued calls fn with every CAR waiting for its piece.
func (s *Store) Queued(fn func(wire.CarView) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bQueued).ForEach(func(k, _ []byte) error {
			r, err := byNumber(tx, decodeUint64(k))
			if err != nil {
				return err
			}
			return fn(r.view)
		})
	})
}

// aggCache keeps decoded aggregate views for readers. An entry is used only
// while its stored bytes are unchanged, so it can never be stale; there are
// few aggregates and every CAR read needs one.
type aggCache struct {
	mu sync.RWMutex
	m  map[uint64]cachedAgg
}

type cachedAgg struct {
	raw  []byte
	view *wire.AggregateView
}

// maxCachedAggs bounds the cache; past it, it starts over.
const maxCachedAggs = 4096

// aggView returns aggregate id as stored in tx. The view is shared by
// readers: callers must not modify it.
func (s *Store) aggView(tx *bolt.Tx, id uint64) (*wire.AggregateView, error) {
	v := tx.Bucket(bAggs).Get(encodeUint64(id))
	if v == nil {
		return nil, fmt.Errorf("aggregate %d: %w", id, ErrNotFound)
	}
	c := &s.cache
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	if ok && bytes.Equal(e.raw, v) {
		return e.view, nil
	}
	var a wire.AggregateView
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("aggregate %d: %w", id, err)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedAggs {
		c.m = map[uint64]cachedAgg{}
	}
	c.m[id] = cachedAgg{raw: bytes.Clone(v), view: &a}
	c.mu.Unlock()
	return &a, nil
}
