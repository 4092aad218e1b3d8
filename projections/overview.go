package projections

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/ferry-dev/ferry/wire"
	bolt "go.etcd.io/bbolt"
)

// Reads for an operator's overview (the dashboard): bounded walks of the
// buckets, newest or oldest first, that never decode more than they show.

// Rejection is one input the aggregator rejected: its input log sequence,
// the CAR it named (if any) and why.
type Rejection struct {
	Input  uint64 `json:"input"`
	Car    string `json:"car,omitempty"`
	Reason string `json:"reason"`
}

// Rejections returns up to limit of the last rejections, newest first.
func (s *Store) Rejections(limit int) ([]Rejection, error) {
	var out []Rejection
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bRejects).Cursor()
		for k, v := cur.Last(); k != nil && len(out) < limit; k, v = cur.Prev() {
			r := Rejection{Input: decodeUint64(k)}
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rejection %d: %w", r.Input, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// OldestQueued returns up to limit of the CARs waiting for their piece,
// oldest first, and how many wait, counted up to countUpTo.
func (s *Store) OldestQueued(limit, countUpTo int) ([]wire.CarView, int, error) {
	var out []wire.CarView
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bQueued).Cursor()
		for k, _ := cur.First(); k != nil && n < countUpTo; k, _ = cur.Next() {
			n++
			if len(out) == limit {
				continue
			}
			r, err := byNumber(tx, decodeUint64(k))
			if err != nil {
				return err
			}
			out = append(out, r.view)
		}
		return nil
	})
	return out, n, err
}

// CarCount is the number of CARs the read models have a record of:
// accepted ones and rejected ones, each counted once.
func (s *Store) CarCount() uint64 { return s.meta(kNextCar) }

// CarByPiece returns the CID of a CAR whose piece CID is piece. There is
// no index by piece: it reads every record (skipping those whose bytes do
// not hold the string), about a second per million CARs, which a search
// by hand can afford.
func (s *Store) CarByPiece(piece string) (string, error) {
	var car string
	want := []byte(piece)
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bCars).ForEach(func(k, v []byte) error {
			if car != "" || !bytes.Contains(v, want) {
				return nil
			}
			r, err := decodeRecord(decodeUint64(k), v)
			if err != nil {
				return err
			}
			if r.view.Piece == piece {
				car = r.view.Car
			}
			return nil
		})
	})
	if err == nil && car == "" {
		err = fmt.Errorf("piece %s: %w", piece, ErrNotFound)
	}
	return car, err
}
