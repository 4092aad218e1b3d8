package projections

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/frc58"
	"github.com/ferry-dev/ferry/piece"
	bolt "go.etcd.io/bbolt"
)

// Errors of the store.
var (
	// ErrNotFound is returned for an unknown CAR or aggregate.
	ErrNotFound = errors.New("not found")
	// ErrLayoutMismatch stops the projection when the layout it derives does
	// not give the aggregator's piece CID.
	ErrLayoutMismatch = errors.New("derived layout disagrees with the aggregate log")
)

var (
	bMeta    = []byte("meta")
	bCars    = []byte("cars")
	bAggs    = []byte("aggregates")
	bMembers = []byte("members") // id|arrival → car
	bLayout  = []byte("layout")  // id|position → car
	bProofs  = []byte("proofs")  // car → CBOR proof
	bByPiece = []byte("byPiece") // aggregate piece CID (v1 and v2) → id
	bRejects = []byte("rejects") // input seq → rejection without a CAR
	bQueued  = []byte("queued")  // CARs waiting for their piece
	kAggSeq  = []byte("aggSeq")
	buckets  = [][]byte{bMeta, bCars, bAggs, bMembers, bLayout, bProofs, bByPiece, bRejects, bQueued}
)

// Store is the bbolt file of the read models.
type Store struct {
	db       *bolt.DB
	path     string
	dealSize uint64
}

// Open opens or creates the read models at path for deals of dealSize.
func Open(path string, dealSize uint64) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("open read models %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("read models %s: %w", path, err)
	}
	return &Store{db: db, path: path, dealSize: dealSize}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Remove deletes a read-model file (ferry replay).
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// AggSeq is the last aggregate log sequence applied.
func (s *Store) AggSeq() uint64 {
	var seq uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		seq = u64(tx.Bucket(bMeta).Get(kAggSeq))
		return nil
	})
	return seq
}

// Entry is one aggregate log message to apply.
type Entry struct {
	Seq   uint64
	Batch aggregator.Batch
}

// Apply applies entries in one transaction. Entries at or below the stored
// sequence were applied before and are skipped.
func (s *Store) Apply(entries []Entry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		w := &writer{tx: tx, dealSize: s.dealSize}
		last := u64(tx.Bucket(bMeta).Get(kAggSeq))
		for _, e := range entries {
			if e.Seq <= last {
				continue
			}
			for _, d := range e.Batch.Decisions {
				if err := w.apply(e.Batch.In, d); err != nil {
					return fmt.Errorf("aggregate log %d, %s: %w", e.Seq, d.Type, err)
				}
			}
			last = e.Seq
		}
		if err := w.flush(); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(kAggSeq, be64(last))
	})
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func key2(id uint64, n int) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, id)
	binary.BigEndian.PutUint32(b[8:], uint32(n))
	return b
}

// writer applies decisions inside one transaction.
type writer struct {
	tx       *bolt.Tx
	dealSize uint64
	aggs     map[uint64]*AggregateView // changed, written by flush
}

func (w *writer) apply(in uint64, d aggregator.Decision) error {
	switch d.Type {
	case aggregator.DecCarQueued:
		if err := w.tx.Bucket(bQueued).Put([]byte(d.Car), nil); err != nil {
			return err
		}
		return w.accept(d, aggregator.Queued)
	case aggregator.DecCarAdded:
		return w.added(d)
	case aggregator.DecCarRejected:
		return w.rejected(in, d)
	case aggregator.DecInputIgnored, aggregator.DecAggClock:
		return nil
	case aggregator.DecAggReady:
		return w.ready(d)
	case aggregator.DecAggOffered:
		return w.updateAgg(d.Aggregate, func(a *AggregateView) { a.State, a.OfferError = aggregator.DealPending, "" })
	case aggregator.DecAggOfferFailed:
		return w.updateAgg(d.Aggregate, func(a *AggregateView) { a.OfferError = d.Reason })
	case aggregator.DecAggDeals:
		return w.updateAgg(d.Aggregate, func(a *AggregateView) {
			a.State = aggregator.DealProcessed
			a.Deals = append(a.Deals, d.Deals...)
		})
	case aggregator.DecAggFailed:
		return w.updateAgg(d.Aggregate, func(a *AggregateView) { a.State, a.Reason = aggregator.DealFailed, d.Reason })
	case aggregator.DecCarsRequeued:
		return w.requeued(d)
	}
	return fmt.Errorf("unknown decision type %q", d.Type)
}

func (w *writer) car(car string) (*CarView, error) {
	v := w.tx.Bucket(bCars).Get([]byte(car))
	if v == nil {
		return nil, fmt.Errorf("CAR %s: %w", car, ErrNotFound)
	}
	var c CarView
	return &c, json.Unmarshal(v, &c)
}

func (w *writer) putCar(c *CarView) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return w.tx.Bucket(bCars).Put([]byte(c.Car), data)
}

// agg reads an aggregate. Within a write transaction aggregates are kept
// decoded until flush: an INGESTING aggregate changes with every CAR that
// joins it, and re-encoding it per CAR would dominate ingest.
func (w *writer) agg(id uint64) (*AggregateView, error) {
	if a, ok := w.aggs[id]; ok {
		return a, nil
	}
	v := w.tx.Bucket(bAggs).Get(be64(id))
	if v == nil {
		return nil, fmt.Errorf("aggregate %d: %w", id, ErrNotFound)
	}
	var a AggregateView
	return &a, json.Unmarshal(v, &a)
}

func (w *writer) putAgg(a *AggregateView) error {
	if w.aggs == nil {
		w.aggs = map[uint64]*AggregateView{}
	}
	w.aggs[a.ID] = a
	return nil
}

// flush writes the aggregates changed in this transaction.
func (w *writer) flush() error {
	for id, a := range w.aggs {
		data, err := json.Marshal(a)
		if err != nil {
			return err
		}
		if err := w.tx.Bucket(bAggs).Put(be64(id), data); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) updateAgg(id uint64, fn func(*AggregateView)) error {
	a, err := w.agg(id)
	if err != nil {
		return err
	}
	fn(a)
	return w.putAgg(a)
}

// accept records a CAR's first acceptance (or re-acceptance after a
// rejection) with the producer's record.
func (w *writer) accept(d aggregator.Decision, state string) error {
	c := &CarView{Car: d.Car, State: state}
	if r := d.Record; r != nil {
		c.Size, c.MD5, c.URLs, c.ReplicatedAt, c.Source = r.Size, r.MD5, r.URLs, r.ReplicatedAt, r.Source
	}
	return w.putCar(c)
}

func (w *writer) added(d aggregator.Decision) error {
	if err := w.tx.Bucket(bQueued).Delete([]byte(d.Car)); err != nil {
		return err
	}
	var c *CarView
	if d.Record != nil {
		c = &CarView{Car: d.Car}
		r := d.Record
		c.Size, c.MD5, c.URLs, c.ReplicatedAt, c.Source = r.Size, r.MD5, r.URLs, r.ReplicatedAt, r.Source
	} else {
		var err error
		if c, err = w.car(d.Car); err != nil {
			return err
		}
	}
	c.State, c.Reason = aggregator.Aggregating, ""
	c.Piece, c.PieceSize = d.Piece, d.PieceSize
	return w.join(d.Aggregate, c) // join stores the car
}

// join appends a CAR to an INGESTING aggregate, creating the aggregate.
func (w *writer) join(id uint64, c *CarView) error {
	a, err := w.agg(id)
	if errors.Is(err, ErrNotFound) {
		a, err = &AggregateView{ID: id, State: aggregator.Ingesting, DealSize: w.dealSize}, nil
	}
	if err != nil {
		return err
	}
	if err := w.tx.Bucket(bMembers).Put(key2(id, a.Count), []byte(c.Car)); err != nil {
		return err
	}
	a.Count++
	a.Payload += c.Size
	c.Aggregate, c.Position, c.Offset, c.AggregatePiece = id, nil, nil, ""
	if err := w.putCar(c); err != nil {
		return err
	}
	return w.putAgg(a)
}

func (w *writer) rejected(in uint64, d aggregator.Decision) error {
	if d.Car != "" {
		if err := w.tx.Bucket(bQueued).Delete([]byte(d.Car)); err != nil {
			return err
		}
		c, err := w.car(d.Car)
		switch {
		case errors.Is(err, ErrNotFound):
			return w.putCar(&CarView{Car: d.Car, State: aggregator.Rejected, Reason: d.Reason})
		case err != nil:
			return err
		case c.State == aggregator.Queued || c.State == aggregator.Rejected:
			// Keep what the producer said; it helps to see why.
			c.State, c.Reason = aggregator.Rejected, d.Reason
			return w.putCar(c)
		}
	}
	// A rejection of an input whose CAR is accepted (or that names none)
	// leaves the CAR alone; it is kept by input sequence for the record.
	data, _ := json.Marshal(map[string]string{"car": d.Car, "reason": d.Reason})
	return w.tx.Bucket(bRejects).Put(be64(in), data)
}

// members returns an aggregate's CARs in arrival order.
func (w *writer) members(id uint64, n int) ([]*CarView, error) {
	out := make([]*CarView, 0, n)
	cur := w.tx.Bucket(bMembers).Cursor()
	prefix := be64(id)
	for k, v := cur.Seek(prefix); k != nil && len(out) < n && string(k[:8]) == string(prefix); k, v = cur.Next() {
		c, err := w.car(string(v))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// ready fixes the layout, stores each CAR's position, offset and proof,
// and checks the derived aggregate against the log's piece CID.
func (w *writer) ready(d aggregator.Decision) error {
	a, err := w.agg(d.Aggregate)
	if err != nil {
		return err
	}
	cars, err := w.members(a.ID, a.Count)
	if err != nil {
		return err
	}
	sizes := make([]uint64, len(cars))
	for i, c := range cars {
		sizes[i] = c.PieceSize
	}
	order := frc58.Layout(sizes)
	pieces := make([]piece.Commitment, len(order))
	laid := make([]*CarView, len(order))
	for i, j := range order {
		p, err := piece.Parse(cars[j].Piece, 0)
		if err != nil {
			return fmt.Errorf("CAR %s: %w", cars[j].Car, err)
		}
		pieces[i], laid[i] = p, cars[j]
	}
	built, err := frc58.New(w.dealSize, pieces)
	if err != nil {
		return err
	}
	if got := built.Commitment().V1().String(); got != d.PieceV1 {
		return fmt.Errorf("%w: aggregate %d derives %s, the log says %s", ErrLayoutMismatch, a.ID, got, d.PieceV1)
	}
	offsets := built.Offsets()
	err = built.EachProof(func(i int, proof *frc58.Proof) error {
		c := laid[i]
		enc, err := frc58.EncodeProof(proof)
		if err != nil {
			return err
		}
		pos, off := i, offsets[i]
		c.Position, c.Offset, c.AggregatePiece = &pos, &off, d.Piece
		if err := w.putCar(c); err != nil {
			return err
		}
		if err := w.tx.Bucket(bProofs).Put([]byte(c.Car), enc); err != nil {
			return err
		}
		return w.tx.Bucket(bLayout).Put(key2(a.ID, i), []byte(c.Car))
	})
	if err != nil {
		return err
	}
	a.State, a.Piece, a.PieceV1, a.PieceSize, a.Closed = aggregator.Ready, d.Piece, d.PieceV1, d.PieceSize, d.Closed
	byPiece := w.tx.Bucket(bByPiece)
	if err := byPiece.Put([]byte(d.Piece), be64(a.ID)); err != nil {
		return err
	}
	if err := byPiece.Put([]byte(d.PieceV1), be64(a.ID)); err != nil {
		return err
	}
	return w.putAgg(a)
}

// requeued moves a run of a failed aggregate's CARs into another aggregate.
func (w *writer) requeued(d aggregator.Decision) error {
	from, err := w.agg(d.From)
	if err != nil {
		return err
	}
	cars, err := w.members(from.ID, from.Count)
	if err != nil {
		return err
	}
	if d.First+d.Count > len(cars) {
		return fmt.Errorf("requeue [%d,+%d) of %d CARs", d.First, d.Count, len(cars))
	}
	for _, c := range cars[d.First : d.First+d.Count] {
		c.State = aggregator.Aggregating
		if err := w.tx.Bucket(bProofs).Delete([]byte(c.Car)); err != nil {
			return err
		}
		if err := w.join(d.Aggregate, c); err != nil {
			return err
		}
	}
	return nil
}

// ErrBadRef is returned for a reference that is neither an id nor a CID.
var ErrBadRef = errors.New("bad reference")
