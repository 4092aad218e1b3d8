package wire

import (
	"encoding/json"
	"time"

	"github.com/ferry-dev/ferry/events"
)

// CarView is what GET /v1/cars/{cid} answers. Fields not yet known are
// absent.
type CarView struct {
	Car          string          `json:"car"`
	State        string          `json:"state"`
	Size         uint64          `json:"size,omitempty"`
	MD5          string          `json:"md5,omitempty"`
	URLs         []string        `json:"urls,omitempty"`
	ReplicatedAt string          `json:"replicatedAt,omitempty"`
	Source       json.RawMessage `json:"source,omitempty"`
	// Group is the CAR's group (the fold's groupBy value in its source),
	// decided when it was accepted and kept when its group's aggregate
	// released it into the shared pool; absent for a CAR of the pool.
	Group     string `json:"group,omitempty"`
	Piece     string `json:"piece,omitempty"`
	PieceSize uint64 `json:"pieceSize,omitempty"`
	Aggregate uint64 `json:"aggregate,omitempty"`
	// AggregatePiece is the aggregate's piece CID v2 once it is closed.
	AggregatePiece string         `json:"aggregatePiece,omitempty"`
	Position       *int           `json:"position,omitempty"`
	Offset         *uint64        `json:"offset,omitempty"`
	Inclusion      *InclusionView `json:"inclusion,omitempty"`
	Deals          []events.Deal  `json:"deals,omitempty"`
	Reason         string         `json:"reason,omitempty"`
	// Work is what the piece workers last said of a QUEUED CAR whose
	// piece work failed: absent while no attempt has failed.
	Work *WorkAttempt `json:"work,omitempty"`
}

// WorkAttempt is the record a work queue keeps of an item whose last
// attempt failed, written by the worker on any machine and read by the
// status API: the piece work of a QUEUED CAR (CarView.Work), and in
// JetStream's FERRY_WORK_ATTEMPTS bucket the fetch and pack work too.
type WorkAttempt struct {
	// Attempt is the delivery that failed (1 for the first); the item
	// is dead-lettered when attempt MaxAttempts fails.
	Attempt     int `json:"attempt"`
	MaxAttempts int `json:"maxAttempts"`
	// LastError is the failure as a reason: what was refused or wrong,
	// never more of what a source answered (as a rejection's reason).
	LastError string    `json:"lastError"`
	At        time.Time `json:"at"`
	// NextRetryAt is when the item is tried again, absent once dead.
	NextRetryAt time.Time `json:"nextRetryAt,omitzero"`
	// Dead says the item ran out of attempts: it is on the dead-letter
	// stream until it is replayed.
	Dead bool `json:"dead,omitempty"`
	// Worker names the process that made the attempt (host:pid).
	Worker string `json:"worker,omitempty"`
}

// MaxStatusCIDs bounds the CIDs of one batch status call; more are
// answered 400.
const MaxStatusCIDs = 1000

// CarStatus answers one CID of a batch status call (GET /v1/cars?cid=…,
// POST /v1/cars/status), in the order asked.
type CarStatus struct {
	// CID is the CID as asked.
	CID string `json:"cid"`
	// Status is what GET /v1/cars/{cid} would answer: 200 with View, 404
	// for a CAR ferry does not know, 400 for text that is not a CID.
	Status int      `json:"status"`
	Error  string   `json:"error,omitempty"`
	View   *CarView `json:"view,omitempty"`
}

// InclusionView is an FRC-0058 inclusion proof in JSON: the subtree proof of
// the piece and the proof of its index entry, nodes in hex, and the same
// proof in go-data-segment's CBOR encoding (base64) for verifiers.
type InclusionView struct {
	Subtree ProofPath `json:"subtree"`
	Index   ProofPath `json:"index"`
	CBOR    []byte    `json:"cbor"`
}

// ProofPath is one Merkle path.
type ProofPath struct {
	Index uint64   `json:"index"`
	Path  []string `json:"path"`
}

// AggregateView is what GET /v1/aggregates/{id} answers.
type AggregateView struct {
	ID    uint64 `json:"id"`
	State string `json:"state"`
	// Group is the group the aggregate is filled for; absent for the
	// shared pool's.
	Group     string `json:"group,omitempty"`
	Piece     string `json:"piece,omitempty"`
	PieceV1   string `json:"pieceV1,omitempty"`
	PieceSize uint64 `json:"pieceSize,omitempty"`
	DealSize  uint64 `json:"dealSize"`
	Payload   uint64 `json:"payload"`
	Count     int    `json:"count"`
	// Closed is why it closed (full, max-wait, forced), or why a RELEASED
	// one gave its CARs to the shared pool (group-max-wait, settings).
	Closed string `json:"closed,omitempty"`
	// ReleasedAt is when a group's aggregate was RELEASED, by the fold's
	// clock: its CARs moved into the shared pool's aggregate then.
	ReleasedAt time.Time `json:"releasedAt,omitzero"`
	// WaitSince is when the aggregate's max-wait clock started, in the
	// fold's tick time: the clock when it opened (or the first tick, if it
	// opened before any). It closes once it holds the minimum payload and
	// MaxWait has passed since.
	WaitSince  time.Time `json:"waitSince,omitzero"`
	OfferError string    `json:"offerError,omitempty"`
	// Offers counts the offers the deal engine accepted.
	Offers int `json:"offers,omitempty"`
	// FailedOffers counts the failed or unanswered offers of its CARs
	// (what --max-offers bounds).
	FailedOffers int `json:"failedOffers,omitempty"`
	// RequeueAt is when the CARs of a failed deal go back to be
	// aggregated again, after the backoff.
	RequeueAt time.Time `json:"requeueAt,omitzero"`
	// LastOfferAt is when the deal engine last took an offer of it, by
	// the fold's clock (its last tick).
	LastOfferAt time.Time `json:"lastOfferAt,omitzero"`
	// ReportDueAt is, while DEAL_PENDING, when the fold offers it again
	// if no deal is reported (LastOfferAt + the log's dealTimeout), or
	// gives up on it when that was its last offer (maxOffers).
	ReportDueAt time.Time `json:"reportDueAt,omitzero"`
	// OfferFailures counts the offers the engine refused or did not
	// answer, each after the offerer's own retries; OfferError is the
	// last one's error, OfferFailedAt its time by the fold's clock and
	// EngineStatus the engine's HTTP status in it (absent: no answer).
	// The three are cleared when an offer is taken.
	OfferFailures int       `json:"offerFailures,omitempty"`
	OfferFailedAt time.Time `json:"offerFailedAt,omitzero"`
	EngineStatus  int       `json:"engineStatus,omitempty"`
	// ReofferAt is, while READY after a failed offer, when the dealer
	// offers it again (serve's --offer-retry); absent after a refusal,
	// which waits for an operator's reoffer.
	ReofferAt time.Time `json:"reofferAt,omitzero"`
	// Reason is why the deal failed, or why it is being offered again.
	Reason string `json:"reason,omitempty"`
	// ReportRefused is the last deal report for this aggregate that ferry
	// refused for its token, since this process started: an engine that
	// cannot deliver its reports shows here, not only in its own log.
	ReportRefused *RefusedReport `json:"reportRefused,omitempty"`
	Deals         []events.Deal  `json:"deals,omitempty"`
	Pieces        []PieceView    `json:"pieces,omitempty"`
	// Next is the position to pass as ?after= for the next page of pieces.
	Next *int `json:"next,omitempty"`
}

// PieceView is one CAR in an aggregate's layout.
type PieceView struct {
	Car       string  `json:"car"`
	Piece     string  `json:"piece"`
	PieceSize uint64  `json:"pieceSize"`
	Offset    *uint64 `json:"offset,omitempty"`
}

// The answers to one event of POST /v1/cars (CarResult.Status).
const (
	Accepted  = "accepted"
	Duplicate = "duplicate"
	Conflict  = "conflict"
	Rejected  = "rejected"
	// Failed is "error": the event could not be stored (the input log
	// did not acknowledge it, or its disk is full); send it again.
	Failed = "error"
)

// CarResult answers one event of POST /v1/cars.
type CarResult struct {
	Car    string `json:"car"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Seq is the input log sequence the event was stored at (accepted,
	// conflict).
	Seq uint64 `json:"seq,omitempty"`
}

// RefusedReport is a deal report ferry refused because of its token. It
// is kept in memory only, never in the logs: an unauthenticated request
// must not write facts, yet an operator looking at a DEAL_PENDING
// aggregate needs to see that its engine is trying to report and failing.
type RefusedReport struct {
	At     time.Time `json:"at"`
	Status string    `json:"status,omitempty"`
	Error  string    `json:"error"`
}

// Receipt tells a CAR's owner that its CAR is in a deal: which aggregate,
// where in it, the proof of inclusion, and the deals just made. One is
// published per CAR for each aggregate.deals decision: the first deals and
// every later replica or renewal.
type Receipt struct {
	Car            string          `json:"car"`
	Piece          string          `json:"piece"`
	PieceSize      uint64          `json:"pieceSize"`
	Aggregate      uint64          `json:"aggregate"`
	AggregatePiece string          `json:"aggregatePiece"`
	DealSize       uint64          `json:"dealSize"`
	Position       int             `json:"position"`
	Offset         uint64          `json:"offset"`
	Inclusion      *InclusionView  `json:"inclusion"`
	Status         string          `json:"status"`
	Deals          []events.Deal   `json:"deals"`
	Source         json.RawMessage `json:"source,omitempty"`
	// Group is the CAR's group, AggregateGroup the aggregate's: they
	// differ for a CAR its group released into the shared pool. Absent
	// for the pool.
	Group          string `json:"group,omitempty"`
	AggregateGroup string `json:"aggregateGroup,omitempty"`
	// AggregateLogSeq is the aggregate log message that made the deals.
	AggregateLogSeq uint64 `json:"aggregateLogSeq"`
}

// Headers of receipt messages, which also let the Receipter resume.
const (
	HeaderAggSeq   = "Ferry-Agg-Seq"
	HeaderPosition = "Ferry-Position"
)
