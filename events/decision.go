package events

import (
	"encoding/json"
	"time"
)

// Decision types on the aggregate log.
const (
	DecCarQueued      = "car.queued"      // accepted, waiting for its piece
	DecCarAdded       = "car.added"       // joined an INGESTING aggregate
	DecCarRejected    = "car.rejected"    // refused, with the reason
	DecInputIgnored   = "input.ignored"   // changed nothing, with the reason
	DecAggClock       = "aggregate.clock" // the aggregate's wait starts now
	DecAggReady       = "aggregate.ready" // closed, layout fixed, piece known
	DecAggOffered     = "aggregate.offered"
	DecAggOfferFailed = "aggregate.offer_failed"
	DecAggDeals       = "aggregate.deals"  // new deals reported
	DecAggFailed      = "aggregate.failed" // the deal failed (engine, operator or deal clock)
	DecAggRetry       = "aggregate.retry"  // READY again, to be offered again now
	DecCarsRequeued   = "cars.requeued"    // pieces of a failed or released aggregate re-aggregated
	DecLogSettings    = "log.settings"     // the Settings the log is folded under (from this input on)
	// DecAggReleased: a group's INGESTING aggregate gave its CARs to the
	// shared pool (the cars.requeued that follow place them); it holds
	// none again.
	DecAggReleased = "aggregate.released"
)

// Reasons of input.ignored that a producer's answer depends on.
const (
	// ReasonDuplicate: a copy of an accepted CAR's event, same size and md5.
	ReasonDuplicate = "duplicate: CAR already accepted"
	// ReasonConflict: a copy of an accepted CAR's event whose size or md5
	// differ from the accepted one's; the accepted copy stands.
	ReasonConflict = "conflict: size or md5 differ from the accepted copy of this CAR"
)

// Why an aggregate closed.
const (
	ClosedFull    = "full"
	ClosedMaxWait = "max-wait"
	ClosedForced  = "forced"
)

// Why a group's aggregate was released.
const (
	// ReleasedMaxWait: it had not reached MinPayload by GroupMaxWait.
	ReleasedMaxWait = "group-max-wait"
	// ReleasedSettings: a settings.change ended or changed GroupBy.
	ReleasedSettings = "settings"
)

// Batch is the decisions one input caused. A batch is never split across
// messages of the aggregate log, which makes an input's effect atomic; a
// message holds one batch or several (see Batches).
type Batch struct {
	// In is the input log sequence of the input.
	In uint64 `json:"in"`
	// Now is the fold's clock after the input (the last tick's time).
	Now       time.Time  `json:"now,omitzero"`
	Decisions []Decision `json:"decisions"`
}

// Record is what a producer told about a CAR, carried through to the read
// models and receipts.
type Record struct {
	Size         uint64          `json:"size"`
	MD5          string          `json:"md5"`
	URLs         []string        `json:"urls"`
	ReplicatedAt string          `json:"replicatedAt,omitempty"`
	Source       json.RawMessage `json:"source,omitempty"`
}

// Decision is one state change. Fields are used as its Type needs.
type Decision struct {
	Type string `json:"type"`
	Car  string `json:"car,omitempty"`
	// Record is set when a CAR is first accepted.
	Record *Record `json:"record,omitempty"`
	// Piece is a piece CID v2: the CAR's (car.added) or the aggregate's
	// (aggregate.ready).
	Piece     string `json:"piece,omitempty"`
	PieceV1   string `json:"pieceV1,omitempty"`
	PieceSize uint64 `json:"pieceSize,omitempty"`
	Aggregate uint64 `json:"aggregate,omitempty"`
	// From, First and Count place a run of a failed aggregate's pieces
	// (cars.requeued): From's members [First, First+Count) in arrival order.
	// In aggregate.failed and aggregate.retry, Count is the failed or
	// unanswered offers of the aggregate's CARs so far.
	From    uint64 `json:"from,omitempty"`
	First   int    `json:"first,omitempty"`
	Count   int    `json:"count,omitempty"`
	Payload uint64 `json:"payload,omitempty"`
	Closed  string `json:"closed,omitempty"`
	// Group is the group (Settings.GroupBy) of the CAR a car.queued or
	// car.added accepts, or of the aggregate a car.added, cars.requeued,
	// aggregate.ready or aggregate.released names; absent for the shared
	// pool.
	Group  string `json:"group,omitempty"`
	Status string `json:"status,omitempty"`
	Deals  []Deal `json:"deals,omitempty"`
	Reason string `json:"reason,omitempty"`
	// At is when an aggregate's wait started (aggregate.clock), or when a
	// failed aggregate's CARs go back to be aggregated again
	// (aggregate.failed; absent when they go at once or never), or when
	// the dealer offers an aggregate again after a failed offer
	// (aggregate.offer_failed; absent when it does not).
	At time.Time `json:"at,omitzero"`
	// HTTPStatus is the deal engine's HTTP status in an
	// aggregate.offer_failed, absent when it did not answer.
	HTTPStatus int `json:"httpStatus,omitempty"`
	// Settings is the settings of a log.settings decision.
	Settings *Settings `json:"settings,omitempty"`
}
