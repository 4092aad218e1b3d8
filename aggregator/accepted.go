package aggregator

import "github.com/ferry-dev/ferry/events"

// Accepted is the fold's dedupe set: every CAR accepted and not rejected
// since, by its cidtext.Key digest, with its copy fingerprint (printOf).
//
// It holds every CAR of the log's history, so where it lives decides how
// the fold's memory grows: MapAccepted keeps it on the heap (tests, audit,
// replay); package seen keeps it on disk behind a filter. Whatever the
// implementation, answers must be exact: a lookup that is wrong once
// changes a decision, and the log would no longer be a function of its
// inputs.
type Accepted interface {
	Get(k [16]byte) (print uint64, ok bool)
	Put(k [16]byte, print uint64) // insert or overwrite
	Delete(k [16]byte)            // no-op when absent
	Len() int                     // exact number of keys present
}

// MapAccepted is the in-heap Accepted: a map.
type MapAccepted map[[16]byte]uint64

var _ Accepted = MapAccepted(nil)

// Get returns k's fingerprint and whether k is present.
func (m MapAccepted) Get(k [16]byte) (uint64, bool) { p, ok := m[k]; return p, ok }

// Put inserts or overwrites k.
func (m MapAccepted) Put(k [16]byte, print uint64) { m[k] = print }

// Delete removes k.
func (m MapAccepted) Delete(k [16]byte) { delete(m, k) }

// Len is the number of keys present.
func (m MapAccepted) Len() int { return len(m) }

// NewWith returns the empty state of a log under cfg whose dedupe set is
// acc, which must be empty or hold exactly the CARs the state will be
// replayed to (a snapshot's). New(cfg) is NewWith(cfg, MapAccepted{}).
func NewWith(cfg events.Settings, acc Accepted) *State {
	return &State{
		cfg:       cfg,
		nextID:    1,
		accepted:  acc,
		queued:    map[string]queuedCar{},
		ingesting: map[string]*aggregate{},
		live:      map[uint64]*aggregate{},
		ripe:      map[uint64]struct{}{},
		closed:    map[uint64]*aggregate{},
		byRoot:    map[[32]byte]uint64{},
	}
}

// Accepted returns the state's dedupe set (the snapshot code checkpoints
// it; nothing else may write it).
func (s *State) Accepted() Accepted { return s.accepted }
