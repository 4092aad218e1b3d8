package projections

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
	bolt "go.etcd.io/bbolt"
)

// Errors of the store.
var (
	// ErrNotFound is returned for an unknown CAR or aggregate.
	ErrNotFound = errors.New("not found")
	// errKeyClash stops the projection when two CIDs share an index key.
	errKeyClash = errors.New("two CAR CIDs share an index key")
	// ErrLayoutMismatch stops the projection when the layout it derives does
	// not give the aggregator's piece CID.
	ErrLayoutMismatch = errors.New("derived layout disagrees with the aggregate log")
)

var (
	bMeta     = []byte("meta")
	bCidRuns  = []byte("cidRuns")    // run number → bucket of one run of the CID index (index.go)
	kEntries  = []byte("entries")    // a run's sorted entries (runs.go)
	bCars     = []byte("cars")       // car number → CAR record (record.go)
	bAggs     = []byte("aggregates") // id → aggregate view (JSON)
	bMembers  = []byte("members")    // id|arrival → member (record.go)
	bClosed   = []byte("closed")     // id → bucket of the closed aggregate's layout and tree
	kLayout   = []byte("layout")     // position → arrival, arrival → position (u32 each)
	kTree     = []byte("tree")       // the aggregate's frc58 tree (frc58.Stored)
	bByPiece  = []byte("byPiece")    // aggregate piece CID (v1 and v2) → id
	bRejects  = []byte("rejects")    // input seq → rejection: CAR CID (if any) and reason
	bQueued   = []byte("queued")     // car number of CARs waiting for their piece → acceptance time (stats.go)
	kAggSeq   = []byte("aggSeq")
	kLastIn   = []byte("lastIn") // the input of the last batch applied
	kNextCar  = []byte("nextCar")
	kSchema   = []byte("schema")
	kBulk     = []byte("bulk")     // set while a rebuild runs
	kIndexed  = []byte("indexed")  // CARs up to this number are in cidRuns
	kSettings = []byte("settings") // the log's latest settings (log.settings), JSON
	buckets   = [][]byte{bMeta, bCidRuns, bCars, bAggs, bMembers, bClosed, bByPiece, bRejects, bQueued, bSince, bMoved}
)

// schemaVersion names the layout of the buckets. A file of another version
// is emptied on Open and rebuilt from the aggregate log by the projector:
// the read models are disposable.
const schemaVersion = "8" // 8: groups (CAR records of version 2, aggregate views with their group), RELEASED aggregates

// Store is the bbolt file of the read models.
//
// A CAR is written when it is accepted and when it joins an aggregate; an
// aggregate's close writes its layout and its tree, one value each, and
// rewrites no CAR. Position, offset and inclusion proof are read from those
// two values (frc58.Stored reads a proof in place), so the file grows by a
// few hundred bytes per CAR, mostly in keys that only ever append.
type Store struct {
	db       *bolt.DB
	path     string
	dealSize uint64
	cache    aggCache
	index    *cidIndex
	bulk     bool
	stats    statsMem
}

// Open opens or creates the read models at path for deals of dealSize. A
// file of an older schema is emptied: the projector rebuilds it from the
// aggregate log.
func Open(path string, dealSize uint64) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, PageSize: 16 << 10})
	if err != nil {
		return nil, fmt.Errorf("open read models %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// A file of another schema, or one whose rebuild never finished, is
		// emptied.
		m := tx.Bucket(bMeta)
		return initBuckets(tx, m != nil && (string(m.Get(kSchema)) != schemaVersion || m.Get(kBulk) != nil))
	})
	index := newCidIndex()
	if err == nil {
		err = db.View(index.load)
	}
	st := &Store{db: db, path: path, dealSize: dealSize, index: index}
	var cfg *events.Settings
	if err == nil {
		cfg, err = st.Settings()
	}
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error {
			stats, err := loadStats(tx)
			st.stats.set(stats)
			return err
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("read models %s: %w", path, err)
	}
	if cfg != nil {
		st.dealSize = cfg.DealSize // the log's, recorded in the read models
	}
	return st, nil
}

// initBuckets creates the buckets that are missing, after deleting every
// bucket first when empty is set.
func initBuckets(tx *bolt.Tx, empty bool) error {
	if empty {
		var names [][]byte
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, append([]byte(nil), name...))
			return nil
		})
		for _, name := range names {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
	}
	for _, b := range buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return tx.Bucket(bMeta).Put(kSchema, []byte(schemaVersion))
}

// Reset empties the read models, to be rebuilt from the aggregate log's
// start. Only the projector calls it, while it is not applying.
func (s *Store) Reset() error {
	if err := s.db.Update(func(tx *bolt.Tx) error { return initBuckets(tx, true) }); err != nil {
		return err
	}
	s.index.reset()
	s.stats.set(Stats{}.clone())
	return nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Bulk starts (on) or finishes a rebuild. During one, commits skip fsync
// and the CID index is written once, in key order, when it finishes (see
// cidIndex). The file is marked until then, so that a rebuild that dies is
// started over by the next Open instead of trusting writes never synced.
func (s *Store) Bulk(on bool) error {
	if on == s.bulk {
		return nil
	}
	s.bulk = on
	s.index.setBulk(on)
	if on {
		s.db.NoSync = true
		return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put(kBulk, []byte{1}) })
	}
	ix := &indexTx{x: s.index}
	if err := ix.writeBulk(s.db, s.meta(kNextCar)); err != nil {
		return fmt.Errorf("write CID index: %w", err)
	}
	ix.committed()
	// The commit that clears the mark syncs: bbolt syncs the file, with
	// everything the rebuild wrote, before it writes the meta page that
	// drops the mark, so no crash leaves the mark gone and the data not.
	s.db.NoSync = false
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Delete(kBulk) })
}

// Remove deletes a read-model file (ferry replay).
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// AggSeq is the last aggregate log sequence applied.
func (s *Store) AggSeq() uint64 { return s.meta(kAggSeq) }

// LastIn is the input log sequence of the last batch applied: every input
// up to it that caused a decision is in the read models.
func (s *Store) LastIn() uint64 { return s.meta(kLastIn) }

// Settings is the settings the log is folded under as of the last batch
// applied: those of its latest log.settings decision (a settings.change
// records a new one mid-log), or nil before the first is applied.
func (s *Store) Settings() (*events.Settings, error) {
	var cfg *events.Settings
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bMeta).Get(kSettings)
		if v == nil {
			return nil
		}
		cfg = new(events.Settings)
		return json.Unmarshal(v, cfg)
	})
	return cfg, err
}

func (s *Store) meta(key []byte) uint64 {
	var v uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		v = decodeUint64(tx.Bucket(bMeta).Get(key))
		return nil
	})
	return v
}

// LoggedBatch is one events.Batch as the aggregate log holds it: the batch
// and the sequence of the message it is in (a message holds one batch or
// several).
type LoggedBatch struct {
	// Seq is the message's sequence in the aggregate log; the batches of
	// one message share it.
	Seq   uint64
	Batch events.Batch
	// At is when the aggregate log stored the message: the times the
	// read models keep for the metrics (stats.go).
	At time.Time
	// end marks the message's last batch (the projector's reader sets it).
	end bool
	// pieces holds the parsed piece of each car.added decision, by index,
	// when the projector's reader prepared them (Prepare): parsing a CID
	// there takes it off the single writer's path.
	pieces []piece.Commitment
}

// Prepare parses what it can of e ahead of Apply, outside the write
// transaction.
func (e *LoggedBatch) Prepare() {
	for i, d := range e.Batch.Decisions {
		if d.Type != events.DecCarAdded {
			continue
		}
		p, err := piece.Parse(d.Piece, 0)
		if err != nil {
			continue // Apply parses again and reports it
		}
		if e.pieces == nil {
			e.pieces = make([]piece.Commitment, len(e.Batch.Decisions))
		}
		e.pieces[i] = p
	}
}

// Apply applies batches, in log order, in one transaction. Batches at or
// below the stored sequence were applied before and are skipped. The
// batches of one aggregate-log message (all with its sequence) must all
// be in one call: the stored sequence says a message was applied whole.
func (s *Store) Apply(batches []LoggedBatch) error {
	ix := &indexTx{x: s.index}
	dealSize := s.dealSize
	var committed Stats
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		w := &writer{tx: tx, dealSize: s.dealSize, next: decodeUint64(meta.Get(kNextCar)), index: ix, stats: s.stats.get()}
		defer func() { dealSize = w.dealSize }()
		// Keys that only ever append: fill the pages instead of splitting
		// them in half (bbolt's default suits random inserts).
		tx.Bucket(bCars).FillPercent = 1
		tx.Bucket(bMembers).FillPercent = 1
		applied := decodeUint64(meta.Get(kAggSeq))
		last, lastIn := applied, decodeUint64(meta.Get(kLastIn))
		for _, e := range batches {
			if e.Seq <= applied {
				continue
			}
			lastIn, w.now, w.at = e.Batch.In, e.Batch.Now, e.At
			for i, d := range e.Batch.Decisions {
				var prepared piece.Commitment
				if i < len(e.pieces) {
					prepared = e.pieces[i]
				}
				if err := w.apply(e.Batch.In, d, prepared); err != nil {
					return fmt.Errorf("aggregate log %d, %s: %w", e.Seq, d.Type, err)
				}
			}
			last = e.Seq
		}
		if err := w.flush(); err != nil {
			return err
		}
		if err := ix.flush(tx, w.next, false); err != nil {
			return err
		}
		if err := meta.Put(kNextCar, encodeUint64(w.next)); err != nil {
			return err
		}
		if err := meta.Put(kLastIn, encodeUint64(lastIn)); err != nil {
			return err
		}
		stats, err := json.Marshal(w.stats)
		if err != nil {
			return err
		}
		if err := meta.Put(kStats, stats); err != nil {
			return err
		}
		committed = w.stats
		return meta.Put(kAggSeq, encodeUint64(last))
	})
	if err != nil {
		return err
	}
	s.stats.set(committed)
	ix.committed()
	s.dealSize = dealSize
	return nil
}

// encodeUint64 is v as 8 big-endian bytes: the store's keys and counters,
// big-endian so that bbolt's byte order is numeric order.
func encodeUint64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// decodeUint64 reads what encodeUint64 wrote; anything else (a missing
// key's nil) is 0.
func decodeUint64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// memberKey is the key of an aggregate's n-th member in bMembers: the
// aggregate's id, then n, so that an aggregate's members are adjacent and
// in order.
func memberKey(id uint64, n int) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, id)
	binary.BigEndian.PutUint32(b[8:], uint32(n))
	return b
}

// writer applies decisions inside one transaction.
type writer struct {
	tx       *bolt.Tx
	dealSize uint64
	aggs     map[uint64]*wire.AggregateView // changed, written by flush
	next     uint64                         // the last car number given
	index    *indexTx
	stats    Stats     // the counts as of the decision applied (stats.go)
	at       time.Time // when the aggregate log stored the batch applied
	now      time.Time // the fold's clock after the batch being applied
}

// apply applies one decision; prepared is its piece when LoggedBatch.Prepare
// parsed it (zero otherwise).
func (w *writer) apply(in uint64, d events.Decision, prepared piece.Commitment) error {
	switch d.Type {
	case events.DecCarQueued:
		r, was, err := w.accept(d)
		if err != nil {
			return err
		}
		w.leaveCar(was)
		w.enterCar(aggregator.Queued)
		r.view.State = aggregator.Queued
		if err := w.put(r); err != nil {
			return err
		}
		return w.tx.Bucket(bQueued).Put(encodeUint64(r.num), encodeTime(w.at))
	case events.DecCarAdded:
		return w.added(d, prepared)
	case events.DecCarRejected:
		return w.rejected(in, d)
	case events.DecInputIgnored:
		return nil
	case events.DecAggClock:
		// The max-wait clock of an aggregate opened before the first tick
		// starts now (see join).
		err := w.updateAgg(d.Aggregate, func(a *wire.AggregateView) { a.WaitSince = d.At })
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	case events.DecLogSettings:
		// The latest one replaces the settings kept: a settings.change
		// never changes the deal size (events.Settings.Fixed), and the
		// log's deal size decides the read models' layouts, whatever the
		// store was opened with.
		data, err := json.Marshal(d.Settings)
		if err != nil {
			return err
		}
		w.dealSize = d.Settings.DealSize
		return w.tx.Bucket(bMeta).Put(kSettings, data)
	case events.DecAggReady:
		return w.ready(d)
	case events.DecAggReleased:
		// Its CARs leave it in the cars.requeued runs that follow in the
		// same batch, as a failed aggregate's do.
		return w.updateAgg(d.Aggregate, func(a *wire.AggregateView) {
			a.State, a.Closed, a.ReleasedAt = aggregator.Released, d.Closed, w.now
		})
	case events.DecAggOffered:
		return w.offered(d)
	case events.DecAggRetry:
		return w.updateAgg(d.Aggregate, func(a *wire.AggregateView) {
			a.State, a.Reason, a.FailedOffers, a.RequeueAt = aggregator.Ready, d.Reason, d.Count, time.Time{}
			a.ReportDueAt, a.ReofferAt = time.Time{}, time.Time{}
		})
	case events.DecAggOfferFailed:
		return w.updateAgg(d.Aggregate, func(a *wire.AggregateView) {
			a.OfferError, a.EngineStatus, a.OfferFailedAt, a.ReofferAt = d.Reason, d.HTTPStatus, w.now, d.At
			a.OfferFailures++
		})
	case events.DecAggDeals:
		return w.updateAgg(d.Aggregate, func(a *wire.AggregateView) {
			// A retry's note, or a give-up the late deal proved wrong, is
			// history now.
			a.State, a.Reason, a.RequeueAt, a.ReportDueAt = aggregator.DealProcessed, "", time.Time{}, time.Time{}
			a.Deals = append(a.Deals, d.Deals...)
		})
	case events.DecAggFailed:
		return w.updateAgg(d.Aggregate, func(a *wire.AggregateView) {
			a.State, a.Reason, a.FailedOffers, a.RequeueAt = aggregator.DealFailed, d.Reason, d.Count, d.At
			a.ReportDueAt, a.ReofferAt = time.Time{}, time.Time{}
		})
	case events.DecCarsRequeued:
		if err := w.updateAgg(d.From, func(a *wire.AggregateView) { a.RequeueAt = time.Time{} }); err != nil {
			return err
		}
		return w.requeued(d)
	}
	return fmt.Errorf("unknown decision type %q", d.Type)
}

// offered applies aggregate.offered: DEAL_PENDING from the fold's clock
// now, its report due when the log's deal timeout says the fold stops
// waiting for it.
func (w *writer) offered(d events.Decision) error {
	timeout, err := w.dealTimeout()
	if err != nil {
		return err
	}
	return w.updateAgg(d.Aggregate, func(a *wire.AggregateView) {
		a.State = aggregator.DealPending
		a.Offers++
		a.LastOfferAt, a.ReportDueAt, a.ReofferAt = w.now, time.Time{}, time.Time{}
		a.OfferError, a.EngineStatus, a.OfferFailedAt = "", 0, time.Time{}
		if timeout > 0 && !w.now.IsZero() {
			a.ReportDueAt = w.now.Add(timeout)
		}
	})
}

// dealTimeout is the log's deal timeout, 0 when it has none.
func (w *writer) dealTimeout() (time.Duration, error) {
	v := w.tx.Bucket(bMeta).Get(kSettings)
	if v == nil {
		return 0, nil
	}
	var s events.Settings
	if err := json.Unmarshal(v, &s); err != nil {
		return 0, fmt.Errorf("log settings: %w", err)
	}
	return s.DealTimeout, nil
}

// lookup reads a CAR by CID.
func (w *writer) lookup(car string) (*carRecord, error) {
	num, ok := w.index.get(w.tx, keyOf(car))
	if !ok {
		return nil, fmt.Errorf("CAR %s: %w", car, ErrNotFound)
	}
	r, err := byNumber(w.tx, num)
	if err == nil && r.view.Car != car {
		return nil, fmt.Errorf("%w: CARs %s and %s", errKeyClash, car, r.view.Car)
	}
	return r, err
}

func byNumber(tx *bolt.Tx, num uint64) (*carRecord, error) {
	v := tx.Bucket(bCars).Get(encodeUint64(num))
	if v == nil {
		return nil, fmt.Errorf("CAR number %d: %w", num, ErrNotFound)
	}
	return decodeRecord(num, v)
}

// put stores a CAR, giving a new one its number.
func (w *writer) put(r *carRecord) error {
	if r.num == 0 {
		w.next++
		r.num = w.next
		w.index.add(r.view.Car, r.num)
	}
	// bbolt keeps the value until commit, so each put gets its own buffer.
	data, err := appendRecord(make([]byte, 0, recordSize(r)), r)
	if err != nil {
		return err
	}
	return w.tx.Bucket(bCars).Put(encodeUint64(r.num), data)
}

// agg reads an aggregate. Within a write transaction aggregates are kept
// decoded until flush: an INGESTING aggregate changes with every CAR that
// joins it, and re-encoding it per CAR would dominate ingest.
func (w *writer) agg(id uint64) (*wire.AggregateView, error) {
	if a, ok := w.aggs[id]; ok {
		return a, nil
	}
	v := w.tx.Bucket(bAggs).Get(encodeUint64(id))
	if v == nil {
		return nil, fmt.Errorf("aggregate %d: %w", id, ErrNotFound)
	}
	var a wire.AggregateView
	return &a, json.Unmarshal(v, &a)
}

func (w *writer) putAgg(a *wire.AggregateView) error {
	if w.aggs == nil {
		w.aggs = map[uint64]*wire.AggregateView{}
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
		if err := w.tx.Bucket(bAggs).Put(encodeUint64(id), data); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) updateAgg(id uint64, fn func(*wire.AggregateView)) error {
	a, err := w.agg(id)
	if err != nil {
		return err
	}
	was := a.State
	fn(a)
	if err := w.aggMoved(a, was); err != nil {
		return err
	}
	return w.putAgg(a)
}

// accept returns the CAR of a first acceptance (or a re-acceptance after a
// rejection) with the producer's record, not yet stored, and the state the
// CAR was in ("" for a new one).
func (w *writer) accept(d events.Decision) (*carRecord, string, error) {
	// The record is written anew; a re-accepted CAR keeps its number.
	r := &carRecord{view: wire.CarView{Car: d.Car}}
	was := ""
	if num, ok := w.index.get(w.tx, keyOf(d.Car)); ok {
		old, err := byNumber(w.tx, num)
		if err != nil {
			return nil, "", err
		}
		if old.view.Car != d.Car {
			return nil, "", fmt.Errorf("%w: CARs %s and %s", errKeyClash, d.Car, old.view.Car)
		}
		r.num, was = num, old.view.State
	}
	if rec := d.Record; rec != nil {
		c := &r.view
		c.Size, c.MD5, c.URLs, c.ReplicatedAt, c.Source = rec.Size, rec.MD5, rec.URLs, rec.ReplicatedAt, rec.Source
	}
	r.view.Group = d.Group // car.queued's and car.added's: the CAR's group
	return r, was, nil
}

func (w *writer) added(d events.Decision, p piece.Commitment) error {
	var r *carRecord
	var was string
	var err error
	if d.Record != nil {
		r, was, err = w.accept(d)
	} else if r, err = w.lookup(d.Car); err == nil {
		was = r.view.State
	}
	if err != nil {
		return err
	}
	w.leaveCar(was)
	// Only a numbered CAR can be queued: skip the seek for a new one.
	if r.num != 0 {
		if err := w.tx.Bucket(bQueued).Delete(encodeUint64(r.num)); err != nil {
			return err
		}
	}
	if p.Padded == 0 {
		if p, err = piece.Parse(d.Piece, 0); err != nil {
			return fmt.Errorf("CAR %s: %w", d.Car, err)
		}
	}
	r.view.State, r.view.Reason = aggregator.Aggregating, ""
	r.view.Piece, r.view.PieceSize = d.Piece, d.PieceSize
	// On car.added the group is both the CAR's and its aggregate's.
	r.view.Group = d.Group
	return w.join(d.Aggregate, d.Group, r, p.Padded, p.Root) // join stores the CAR
}

// join appends a CAR to an INGESTING aggregate, creating the aggregate,
// filled for group, when the decision opens it.
func (w *writer) join(id uint64, group string, r *carRecord, padded uint64, root [32]byte) error {
	a, err := w.agg(id)
	if errors.Is(err, ErrNotFound) {
		// The fold starts a new aggregate's max-wait clock at its own
		// clock, or at the next tick when it has none yet (DecAggClock).
		a = &wire.AggregateView{ID: id, State: aggregator.Ingesting, Group: group, DealSize: w.dealSize, WaitSince: w.now}
		err = w.newAgg(a)
	}
	if err != nil {
		return err
	}
	w.enterCar(carStateOf(a.State))
	r.view.Aggregate, r.member = id, a.Count
	if err := w.put(r); err != nil { // gives a new CAR its number
		return err
	}
	if err := w.tx.Bucket(bMembers).Put(memberKey(id, a.Count), appendMember(make([]byte, 0, memberLen), r.num, padded, root)); err != nil {
		return err
	}
	a.Count++
	a.Payload += r.view.Size
	return w.putAgg(a)
}

// rejected records a rejection by input sequence (Rejections reads the
// last ones), and on the CAR unless the CAR is accepted already: a
// rejection of an input whose CAR is accepted leaves the CAR alone.
func (w *writer) rejected(in uint64, d events.Decision) error {
	data, _ := json.Marshal(Rejection{Input: in, Car: d.Car, Reason: d.Reason})
	if err := w.tx.Bucket(bRejects).Put(encodeUint64(in), data); err != nil {
		return err
	}
	if d.Car == "" {
		return nil
	}
	r, err := w.lookup(d.Car)
	switch {
	case errors.Is(err, ErrNotFound):
		w.enterCar(aggregator.Rejected)
		return w.put(&carRecord{view: wire.CarView{Car: d.Car, State: aggregator.Rejected, Reason: d.Reason}})
	case err != nil:
		return err
	case r.view.State == aggregator.Queued || r.view.State == aggregator.Rejected:
		if err := w.tx.Bucket(bQueued).Delete(encodeUint64(r.num)); err != nil {
			return err
		}
		w.leaveCar(r.view.State)
		w.enterCar(aggregator.Rejected)
		// Keep what the producer said; it helps to see why.
		r.view.State, r.view.Reason = aggregator.Rejected, d.Reason
		return w.put(r)
	}
	return nil
}

// member is one entry of the members bucket.
type member struct {
	num    uint64
	padded uint64
	root   [32]byte
}

// members calls fn with an aggregate's members from arrival index first
// on, in arrival order, until fn returns false.
func members(tx *bolt.Tx, id uint64, first int, fn func(i int, m member) bool) error {
	cur := tx.Bucket(bMembers).Cursor()
	for k, v := cur.Seek(memberKey(id, first)); k != nil && binary.BigEndian.Uint64(k) == id; k, v = cur.Next() {
		if len(v) != memberLen || len(k) != 12 {
			return fmt.Errorf("aggregate %d: corrupt member", id)
		}
		m := member{num: binary.BigEndian.Uint64(v), padded: 1 << v[8]}
		copy(m.root[:], v[9:])
		if !fn(int(binary.BigEndian.Uint32(k[8:])), m) {
			break
		}
	}
	return nil
}

// ready lays the aggregate out, builds its tree, checks the tree's root
// against the log's piece CID, and stores layout and tree.
func (w *writer) ready(d events.Decision) error {
	a, err := w.agg(d.Aggregate)
	if err != nil {
		return err
	}
	all := make([]member, 0, a.Count)
	err = members(w.tx, a.ID, 0, func(_ int, m member) bool {
		all = append(all, m)
		return true
	})
	if err != nil {
		return err
	}
	if len(all) != a.Count {
		return fmt.Errorf("aggregate %d has %d members, its view %d", a.ID, len(all), a.Count)
	}
	arrived := make([]piece.Commitment, len(all))
	for i, m := range all {
		arrived[i] = piece.Commitment{Root: m.root, Padded: m.padded}
	}
	pieces, order := frc58.Arrange(arrived)
	built, err := frc58.New(w.dealSize, pieces)
	if err != nil {
		return err
	}
	if got := built.Commitment().V1().String(); got != d.PieceV1 {
		return fmt.Errorf("%w: aggregate %d derives %s, the log says %s", ErrLayoutMismatch, a.ID, got, d.PieceV1)
	}
	// A bucket of its own per aggregate: a later close then never rewrites
	// (and pages in) the leaf that holds this one's megabytes.
	closed, err := w.tx.Bucket(bClosed).CreateBucketIfNotExists(encodeUint64(a.ID))
	if err != nil {
		return err
	}
	if err := closed.Put(kLayout, encodeLayout(order)); err != nil {
		return err
	}
	if err := closed.Put(kTree, built.AppendBinary(nil)); err != nil {
		return err
	}
	was := a.State
	a.State, a.Piece, a.PieceV1, a.PieceSize, a.Closed = aggregator.Ready, d.Piece, d.PieceV1, d.PieceSize, d.Closed
	a.Group = d.Group
	if err := w.aggMoved(a, was); err != nil {
		return err
	}
	byPiece := w.tx.Bucket(bByPiece)
	if err := byPiece.Put([]byte(d.Piece), encodeUint64(a.ID)); err != nil {
		return err
	}
	if err := byPiece.Put([]byte(d.PieceV1), encodeUint64(a.ID)); err != nil {
		return err
	}
	return w.putAgg(a)
}

// encodeLayout stores both directions of a layout: n big-endian u32
// arrival indexes by position, then n positions by arrival index.
func encodeLayout(order []int) []byte {
	n := len(order)
	b := make([]byte, 8*n)
	for pos, i := range order {
		binary.BigEndian.PutUint32(b[4*pos:], uint32(i))
		binary.BigEndian.PutUint32(b[4*(n+i):], uint32(pos))
	}
	return b
}

// closed is a closed aggregate's layout and tree, read in place from the
// transaction's memory.
type closed struct {
	id   uint64
	lay  layout
	tree frc58.Stored
}

// openClosed reads aggregate id's layout and tree; ok is false before its
// close.
func openClosed(tx *bolt.Tx, id uint64) (c closed, ok bool, err error) {
	b := tx.Bucket(bClosed).Bucket(encodeUint64(id))
	if b == nil {
		return closed{}, false, nil
	}
	c = closed{id: id, lay: layout(b.Get(kLayout))}
	if c.tree, err = frc58.OpenStored(b.Get(kTree)); err != nil {
		return closed{}, false, fmt.Errorf("aggregate %d: %w", id, err)
	}
	return c, true, nil
}

// place sets the position, offset and aggregate piece of a CAR of the
// aggregate a, closed as c, and returns its inclusion proof. A CAR that
// moved on after a failed deal is not placed in a.
func (c closed) place(a *wire.AggregateView, r *carRecord) (*frc58.Proof, error) {
	if r.view.Aggregate != c.id {
		return nil, nil
	}
	pos := c.lay.position(r.member)
	if pos < 0 {
		return nil, fmt.Errorf("aggregate %d: no layout position for CAR %s", c.id, r.view.Car)
	}
	proof, err := c.tree.Proof(pos)
	if err != nil {
		return nil, fmt.Errorf("aggregate %d: %w", c.id, err)
	}
	off := c.tree.Offset(pos)
	v := &r.view
	v.Position, v.Offset, v.AggregatePiece = &pos, &off, a.Piece
	return proof, nil
}

// layout is a stored layout, read in place.
type layout []byte

func (l layout) len() int { return len(l) / 8 }

// arrival is the arrival index of the piece at position pos.
func (l layout) arrival(pos int) int { return int(binary.BigEndian.Uint32(l[4*pos:])) }

// position is the position of the piece that arrived i-th, or -1.
func (l layout) position(i int) int {
	if i < 0 || i >= l.len() {
		return -1
	}
	return int(binary.BigEndian.Uint32(l[4*(l.len()+i):]))
}

// requeued moves a run of a failed or released aggregate's CARs into
// another aggregate, of the decision's group (the pool's for a released
// one). The CARs keep their own group.
func (w *writer) requeued(d events.Decision) error {
	from, err := w.agg(d.From)
	if err != nil {
		return err
	}
	if d.First < 0 || d.Count < 0 || d.First+d.Count > from.Count {
		return fmt.Errorf("requeue [%d,+%d) of %d CARs", d.First, d.Count, from.Count)
	}
	run := make([]member, 0, d.Count)
	err = members(w.tx, from.ID, d.First, func(_ int, m member) bool {
		run = append(run, m)
		return len(run) < d.Count
	})
	if err != nil {
		return err
	}
	if err := w.moveOut(from, len(run)); err != nil {
		return err
	}
	for _, m := range run {
		r, err := byNumber(w.tx, m.num)
		if err != nil {
			return err
		}
		r.view.State = aggregator.Aggregating
		if err := w.join(d.Aggregate, d.Group, r, m.padded, m.root); err != nil {
			return err
		}
	}
	return nil
}

// ErrBadRef is returned for a reference that is neither an id nor a CID.
var ErrBadRef = errors.New("bad reference")
