package projections

import (
	"encoding/binary"
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/wire"
	bolt "go.etcd.io/bbolt"
)

// The read models keep what the metrics need as they apply, so that a
// scrape reads a few keys instead of scanning every CAR:
//
//   - per-state counts of CARs (the state the status API reports) and of
//     aggregates, in the meta key kStats, written in the same transaction
//     as the data they count;
//   - each queued CAR's acceptance time, as the value of its key in
//     bQueued;
//   - when each INGESTING or DEAL_PENDING aggregate entered that state, in
//     bSince (a handful of keys: the INGESTING aggregates, the pool's and
//     one per group, and those waiting for a deal);
//   - how many CARs moved out of each failed or released aggregate, in
//     bMoved, so that an aggregate's live CARs (those whose state is the
//     aggregate's) are its count less those.
//
// Times are when the aggregate log stored the batch (LoggedBatch.At): a
// replay of the same log gives the same values.
var (
	kStats = []byte("stats")
	bSince = []byte("since") // aggregate id → state byte, then UnixNano (u64)
	bMoved = []byte("moved") // aggregate id → CARs requeued out of it (u64)
)

// Stats is the read models' per-state counts.
type Stats struct {
	// Cars counts CARs by the state the status API reports for them.
	Cars map[string]int64 `json:"cars"`
	// Aggregates counts aggregates by state.
	Aggregates map[string]int64 `json:"aggregates"`
}

func (s Stats) clone() Stats {
	return Stats{Cars: cloneCounts(s.Cars), Aggregates: cloneCounts(s.Aggregates)}
}

func cloneCounts(m map[string]int64) map[string]int64 {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]int64{}
	}
	return out
}

func (s Stats) add(m map[string]int64, state string, n int64) {
	m[state] += n
	if m[state] == 0 {
		delete(m, state)
	}
}

// statsMem is the committed stats, for scrapes between transactions.
type statsMem struct {
	mu sync.Mutex
	s  Stats
}

func (m *statsMem) get() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.clone()
}

func (m *statsMem) set(s Stats) {
	m.mu.Lock()
	m.s = s
	m.mu.Unlock()
}

// Stats is the CARs and aggregates by state as of the last applied batch.
func (s *Store) Stats() Stats { return s.stats.get() }

func loadStats(tx *bolt.Tx) (Stats, error) {
	var st Stats
	if v := tx.Bucket(bMeta).Get(kStats); v != nil {
		if err := json.Unmarshal(v, &st); err != nil {
			return Stats{}, err
		}
	}
	return st.clone(), nil
}

// carStateOf is the state the status API reports for a CAR in an
// aggregate in state aggState.
func carStateOf(aggState string) string {
	if aggState == aggregator.Ingesting {
		return aggregator.Aggregating
	}
	return aggState
}

// Ages are when the oldest waiting things started waiting; a zero time
// means there is none.
type Ages struct {
	// Queued is when the oldest QUEUED CAR (by first acceptance) was
	// accepted.
	Queued time.Time
	// Ingesting is when the oldest INGESTING aggregate (of the pool's
	// and the groups') took its first CAR.
	Ingesting time.Time
	// DealPending is when the aggregate that has been DEAL_PENDING longest
	// was offered.
	DealPending time.Time
}

// Ages reads the oldest waiting CAR's and aggregates' times: the first
// key of bQueued and the few keys of bSince.
//
// The queued CARs are in CAR-number order, the order of first acceptance:
// a CAR accepted again after a rejection keeps its number, so while such
// a CAR waits ahead of older ones its (newer) time is the one read.
func (s *Store) Ages() (Ages, error) {
	var a Ages
	err := s.db.View(func(tx *bolt.Tx) error {
		if _, v := tx.Bucket(bQueued).Cursor().First(); len(v) == 8 {
			a.Queued = decodeTime(v)
		}
		return tx.Bucket(bSince).ForEach(func(_, v []byte) error {
			if len(v) != 9 {
				return nil
			}
			t := decodeTime(v[1:])
			switch v[0] {
			case sinceIngesting:
				a.Ingesting = older(a.Ingesting, t)
			case sincePending:
				a.DealPending = older(a.DealPending, t)
			}
			return nil
		})
	})
	return a, err
}

func older(a, b time.Time) time.Time {
	if b.IsZero() {
		return a
	}
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

const (
	sinceIngesting = 'I'
	sincePending   = 'P'
)

// decodeTime reads what encodeTime wrote; 0 is the zero time (a batch
// applied without the log's time).
func decodeTime(b []byte) time.Time {
	n := binary.BigEndian.Uint64(b)
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

func encodeTime(t time.Time) []byte {
	if t.IsZero() {
		return encodeUint64(0)
	}
	return encodeUint64(uint64(t.UnixNano()))
}

// enterCar counts a CAR into state, leaveCar out of it.
func (w *writer) enterCar(state string) { w.stats.add(w.stats.Cars, state, 1) }
func (w *writer) leaveCar(state string) {
	if state != "" { // a new CAR was in none
		w.stats.add(w.stats.Cars, state, -1)
	}
}

// newAgg counts an aggregate created INGESTING.
func (w *writer) newAgg(a *wire.AggregateView) error {
	w.stats.add(w.stats.Aggregates, a.State, 1)
	return w.tx.Bucket(bSince).Put(encodeUint64(a.ID), append([]byte{sinceIngesting}, encodeTime(w.at)...))
}

// aggMoved moves an aggregate, and its live CARs, from state was to its
// state now.
func (w *writer) aggMoved(a *wire.AggregateView, was string) error {
	if a.State == was {
		return nil
	}
	w.stats.add(w.stats.Aggregates, was, -1)
	w.stats.add(w.stats.Aggregates, a.State, 1)
	live := int64(a.Count) - int64(w.moved(a.ID))
	w.stats.add(w.stats.Cars, carStateOf(was), -live)
	w.stats.add(w.stats.Cars, carStateOf(a.State), live)
	since := w.tx.Bucket(bSince)
	if a.State == aggregator.DealPending {
		return since.Put(encodeUint64(a.ID), append([]byte{sincePending}, encodeTime(w.at)...))
	}
	return since.Delete(encodeUint64(a.ID))
}

func (w *writer) moved(id uint64) uint64 {
	return decodeUint64(w.tx.Bucket(bMoved).Get(encodeUint64(id)))
}

// moveOut records that n of aggregate a's CARs left it.
func (w *writer) moveOut(a *wire.AggregateView, n int) error {
	w.stats.add(w.stats.Cars, carStateOf(a.State), -int64(n))
	return w.tx.Bucket(bMoved).Put(encodeUint64(a.ID), encodeUint64(w.moved(a.ID)+uint64(n)))
}
