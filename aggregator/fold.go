package aggregator

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/cidtext"
	"github.com/ferry-dev/ferry/piece"
)

// Aggregate states, as DESIGN.md names them.
const (
	Ingesting     = "INGESTING"
	Ready         = "READY"
	DealPending   = "DEAL_PENDING"
	DealProcessed = "DEAL_PROCESSED"
	DealFailed    = "DEAL_FAILED"
)

// CAR states that are not an aggregate's state.
const (
	Queued      = "QUEUED"
	Aggregating = "AGGREGATING"
	Rejected    = "REJECTED"
)

// Released is the end of a group's INGESTING aggregate that gave its CARs
// to the shared pool (events.DecAggReleased): it holds no CARs and never
// closes.
const Released = "RELEASED"

// DefaultMaxTickAhead is the tick bound ferry serve records by default:
// ample for clocks that disagree by seconds, far below any wait it could
// cut short.
const DefaultMaxTickAhead = 5 * time.Minute

// DealRoom is what a deal of dealSize leaves one CAR, as the fold and the
// HTTP API validate events against it.
func DealRoom(dealSize uint64) events.DealRoom {
	return events.DealRoom{DealSize: dealSize, MaxPiece: frc58.MaxPiece(dealSize)}
}

// DefaultMinPayload is Spade's lower bound scaled to dealSize: just over
// half the deal's unpadded capacity (1+127*(1<<27) for 32 GiB).
func DefaultMinPayload(dealSize uint64) uint64 { return piece.Unpadded(dealSize)/2 + 1 }

// member is a CAR in an aggregate: what its layout and piece CID need.
// The CAR's CID is not kept: nothing the fold decides reads it, and at a
// million CARs it would be the largest part of the state.
type member struct {
	root   [32]byte
	padded uint64
	size   uint64
}

// aggregate is the fold's view of one aggregate. Members are dropped once
// its deals are made: nothing the fold decides needs them after that.
type aggregate struct {
	id      uint64
	group   string // its group's name; "" for the shared pool
	state   string
	members []member // arrival order
	used    uint64   // padded bytes of the members
	payload uint64   // CAR bytes of the members
	since   time.Time
	deals   map[dealKey]struct{}
	// tries counts the failed or unanswered offers its CARs have had, in
	// this aggregate and the failed ones they came from (the most-tried
	// CAR's count): MaxOffers bounds it.
	tries int
	// offeredAt is the fold's clock at its last aggregate.offered; a deal
	// timeout counts from it.
	offeredAt time.Time
	// requeueAt is when a DEAL_FAILED aggregate's CARs go back (zero: they
	// went at once, or never will).
	requeueAt time.Time
}

type dealKey struct {
	provider string
	id       uint64
}

// queuedCar is a CAR waiting for its piece, with the piece its producer
// claimed when pieces are verified ("" otherwise).
type queuedCar struct {
	size  uint64
	claim string
	group string
}

// carKey is a fixed-size digest of a CAR CID: the dedup set holds every CAR
// ever accepted, so it must be small per entry.
type carKey [16]byte

func keyOf(car string) carKey { return cidtext.Key(car) }

// copyPrint is a fingerprint of what identifies a CAR's bytes in its
// car.replicated, size and md5: a copy of an accepted CAR with another
// fingerprint is a conflict, not a duplicate.
type copyPrint uint64

func printOf(size uint64, md5 string) copyPrint {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], size)
	h.Write(b[:])
	h.Write([]byte(strings.ToLower(md5)))
	return copyPrint(h.Sum64())
}

// State is the aggregator's state. The zero value is not usable; see New.
//
// Evolve writes every field but two: lastIn and now are the header of a
// batch (events.Batch In and Now), which changes with no decision (every
// input moves the position; a tick that decides nothing still moves the
// clock). ApplyInput sets lastIn once the input is decided, onTick sets
// now before the tick's decisions (which read it), and Replay sets both
// from a stored batch's header. Nothing else writes the state.
type State struct {
	cfg      events.Settings
	origin   events.Settings // the log's first settings, which made it
	recorded bool            // cfg is on the log (a log.settings decision)
	lastIn   uint64          // the position: the last input applied (Batch.In)
	now      time.Time       // the clock: the last tick's time (Batch.Now)
	nextID   uint64

	accepted Accepted             // every CAR accepted and not rejected since (carKey → copyPrint)
	queued   map[string]queuedCar // CARs waiting for a piece

	// The INGESTING aggregates: the shared pool's (group "") and one per
	// group (Settings.GroupBy), by group and by id. No decision depends on
	// the maps' order: decisions about several take them in the order they
	// opened (groupQueue) or in id order (liveIDs, and the ripe ones
	// sorted).
	ingesting map[string]*aggregate
	live      map[uint64]*aggregate
	// groupQueue is the groups' INGESTING aggregates in the order they
	// opened, which is the order of their since: those past GroupMaxWait
	// are a prefix. Closed ones are dropped from its front lazily.
	groupQueue []uint64
	// ripe are the INGESTING aggregates holding MinPayload: the only ones
	// max wait may close.
	ripe map[uint64]struct{}
	// ingestingCARs counts the CARs in them, for Counts: the runner asks
	// after every append, and there may be thousands of groups.
	ingestingCARs int

	closed map[uint64]*aggregate // every aggregate no longer INGESTING
	byRoot map[[32]byte]uint64   // aggregate piece root → id

	// pending are the DEAL_PENDING aggregates in the order they were
	// offered, which is the order of their offeredAt: deal timeouts are
	// found from its front.
	pending []uint64
	// waiting are the DEAL_FAILED aggregates whose CARs wait for their
	// backoff, in the order they failed.
	waiting []uint64
}

// New returns the empty state of a log under cfg.
func New(cfg events.Settings) *State { return NewWith(cfg, MapAccepted{}) }

// LastIn is the sequence of the last input applied.
func (s *State) LastIn() uint64 { return s.lastIn }

// Settings is the log's settings as the state knows them: those it was
// made with until it replays a log.settings decision.
func (s *State) Settings() events.Settings { return s.cfg }

// Input is one message of the input log.
type Input struct {
	Seq  uint64
	Data []byte
	// Stored is when the input log stored it (its JetStream timestamp):
	// part of the log, so reading it keeps the fold deterministic. Zero
	// when unknown, which lifts the tick bound (tests of other rules).
	Stored time.Time
}

// Apply decides what the input at seq causes and evolves the state by it.
// An input at or below LastIn was applied before and gives an empty batch.
func (s *State) Apply(seq uint64, data []byte) events.Batch {
	return s.ApplyInput(Input{Seq: seq, Data: data})
}

// ApplyInput is Apply with the input's stored time, which bounds ticks
// (events.Settings.MaxTickAhead). The runner and every re-fold of a log use it.
func (s *State) ApplyInput(in Input) events.Batch { return s.ApplyEvent(in, nil) }

// ApplyEvent is ApplyInput of an input its caller has decoded: ev is
// events.Decode(in.Data), or nil for the fold to decode it (as it does an
// input that does not decode, or is too large to be read). Folds of one
// log under several settings (package whatif) decode each input once for
// all of them; the fold only reads ev, so they may share it.
func (s *State) ApplyEvent(in Input, ev events.Event) events.Batch {
	b := &events.Batch{In: in.Seq}
	if in.Seq <= s.lastIn {
		return *b
	}
	if !s.recorded {
		cfg := s.cfg
		s.emit(b, events.Decision{Type: events.DecLogSettings, Settings: &cfg})
	}
	var err error
	if ev == nil && len(in.Data) <= events.MaxInputBytes {
		ev, err = events.Decode(in.Data)
	}
	switch {
	case len(in.Data) > events.MaxInputBytes:
		// The input log refuses these; one from a log made without that
		// limit is refused here, without being read.
		s.ignore(b, "", fmt.Sprintf("input of %d bytes, more than the %d an input may have", len(in.Data), events.MaxInputBytes))
	case err != nil:
		s.undecodable(b, in.Data, err)
	default:
		s.decide(b, ev, in.Stored)
	}
	s.lastIn = in.Seq
	b.Now = s.now
	return *b
}

// Replay evolves the state by a stored batch. The clock is set first:
// b.Now is the time every decision of the batch was made at (only a tick
// moves the clock, and it does so before it decides), while the batch
// before may be older than ticks that decided nothing.
func (s *State) Replay(b events.Batch) error {
	s.now = b.Now
	for _, d := range b.Decisions {
		if err := s.Evolve(d); err != nil {
			return fmt.Errorf("batch of input %d: %w", b.In, err)
		}
	}
	s.lastIn = max(s.lastIn, b.In)
	return nil
}

// emit evolves the state by d and adds it to b. Whatever an input says
// that d repeats is bounded here, so that no input makes a batch the
// aggregate log refuses: a CAR text that is not a CID's is left out (the
// reason quotes an excerpt), and a reason is cut to events.MaxReason.
func (s *State) emit(b *events.Batch, d events.Decision) {
	if len(d.Car) > events.MaxCIDText {
		d.Car = ""
	}
	d.Reason = events.BoundReason(d.Reason)
	if err := s.Evolve(d); err != nil {
		// decide only emits decisions valid in the current state; a failure
		// here is a bug in this file, and continuing would corrupt the log.
		panic(fmt.Sprintf("aggregator: decided an invalid decision: %v", err))
	}
	b.Decisions = append(b.Decisions, d)
}

func (s *State) decide(b *events.Batch, ev events.Event, stored time.Time) {
	switch e := ev.(type) {
	case *events.CarReplicated:
		s.onReplicated(b, e)
	case *events.CarPiece:
		s.onPiece(b, e)
	case *events.CarInvalid:
		s.onInvalid(b, e)
	case *events.Tick:
		s.onTick(b, e, stored)
	case *events.AggregateClose:
		s.onClose(b, e)
	case *events.DealOffered:
		s.onOffered(b, e)
	case *events.OfferFailed:
		s.onOfferFailed(b, e)
	case *events.DealReport:
		s.onReport(b, e)
	case *events.AggregateReoffer:
		s.onReoffer(b, e)
	case *events.AggregateFail:
		s.onFail(b, e)
	case *events.SettingsChange:
		s.onSettingsChange(b, e)
	case *events.PinRequested, *events.PinCancelled, *events.PinFetching, *events.PinFetched, *events.PinFailed:
		// A pin's life is the pins read model's; its CAR reaches the
		// fold as the car.replicated its fetch worker publishes.
	}
}

// undecodable records an input that is not a well-formed event. A
// car.replicated that names its CAR is rejected under that name so its
// producer can find the reason.
func (s *State) undecodable(b *events.Batch, data []byte, err error) {
	var peek struct {
		Type string `json:"type"`
		Car  any    `json:"car"`
	}
	_ = json.Unmarshal(data, &peek)
	text, _ := peek.Car.(string)
	car, bad := events.CarCID(text)
	if bad != nil {
		car = "" // not a CAR's name: the rejection names none (it is found by its input)
	}
	if _, known := s.accepted.Get(keyOf(car)); peek.Type == events.TypeCarReplicated && !known {
		s.emit(b, events.Decision{Type: events.DecCarRejected, Car: car, Reason: err.Error()})
		return
	}
	s.emit(b, events.Decision{Type: events.DecInputIgnored, Car: car, Reason: err.Error()})
}

func (s *State) onReplicated(b *events.Batch, e *events.CarReplicated) {
	chk, invalid := e.Check(DealRoom(s.cfg.DealSize))
	car := e.Car // as canonical does, from the CID Check parsed
	if chk.Car != "" {
		car = chk.Car
	}
	fp, known := s.accepted.Get(keyOf(car))
	if invalid != nil {
		if known {
			// A bad copy of an accepted CAR's event must not undo it.
			s.ignore(b, car, "invalid event for an accepted CAR: "+invalid.Error())
			return
		}
		s.emit(b, events.Decision{Type: events.DecCarRejected, Car: car, Reason: invalid.Error()})
		return
	}
	if known {
		if copyPrint(fp) != printOf(e.Size, e.MD5) {
			s.ignore(b, car, events.ReasonConflict)
			return
		}
		s.emit(b, events.Decision{Type: events.DecInputIgnored, Car: car, Reason: events.ReasonDuplicate})
		return
	}
	rec := &events.Record{Size: e.Size, MD5: e.MD5, URLs: e.URLs, ReplicatedAt: e.ReplicatedAt, Source: e.Source}
	group := events.GroupOf(e.Source, s.cfg.GroupBy)
	if e.Piece == "" {
		s.emit(b, events.Decision{Type: events.DecCarQueued, Car: car, Record: rec, Group: group})
		return
	}
	c := chk.Piece
	if s.cfg.VerifyPieces {
		if v2, err := c.V2Text(); err == nil {
			s.emit(b, events.Decision{Type: events.DecCarQueued, Car: car, Record: rec, Piece: v2, Group: group})
			return
		}
	}
	s.add(b, car, rec, c, group)
}

func (s *State) onPiece(b *events.Batch, e *events.CarPiece) {
	car := canonical(e.Car)
	q, ok := s.queued[car]
	if !ok {
		s.ignore(b, car, s.notQueued(car))
		return
	}
	c, invalid := events.CheckPiece(e.Piece, e.PieceSize, q.size)
	if invalid != nil {
		// A piece that cannot be this CAR's is a bad event, not a bad CAR:
		// the CAR waits for a piece worker's answer.
		s.ignore(b, car, "car.piece: "+invalid.Error())
		return
	}
	if q.claim != "" { // only a claim needs the text before add makes it
		if v2, err := c.V2Text(); err == nil && q.claim != v2 {
			reason := fmt.Sprintf("piece: claimed %s, computed %s", q.claim, v2)
			s.emit(b, events.Decision{Type: events.DecCarRejected, Car: car, Reason: reason})
			return
		}
	}
	s.add(b, car, nil, c, q.group)
}

func (s *State) onInvalid(b *events.Batch, e *events.CarInvalid) {
	car := canonical(e.Car)
	if _, ok := s.queued[car]; !ok {
		s.ignore(b, car, s.notQueued(car))
		return
	}
	reason := e.Reason
	if reason == "" {
		reason = "car.invalid without a reason"
	}
	s.emit(b, events.Decision{Type: events.DecCarRejected, Car: car, Reason: reason}) // emit bounds it
}

func (s *State) notQueued(car string) string {
	if _, ok := s.accepted.Get(keyOf(car)); ok {
		return "CAR already has its piece"
	}
	return "unknown CAR"
}

// add places a CAR with its piece into its group's INGESTING aggregate,
// closing it first when the piece does not fit. The group was decided when
// the CAR was accepted, under the settings of that input.
func (s *State) add(b *events.Batch, car string, rec *events.Record, c piece.Commitment, group string) {
	v2, err := c.V2Text()
	if err != nil || !piece.ValidPadded(c.Padded) || c.Padded > frc58.MaxPiece(s.cfg.DealSize) {
		// Validate rules this out; a piece that still slips through is
		// rejected here rather than allowed to crash the fold.
		s.emit(b, events.Decision{Type: events.DecCarRejected, Car: car, Reason: fmt.Sprintf("piece: %v (padded %d)", err, c.Padded)})
		return
	}
	if a := s.ingesting[group]; a != nil && !frc58.Fits(s.cfg.DealSize, a.used+c.Padded, len(a.members)+1) {
		s.closeAgg(b, a, events.ClosedFull)
	}
	s.emit(b, events.Decision{Type: events.DecCarAdded, Car: car, Record: rec, Piece: v2,
		PieceSize: c.Padded, Aggregate: s.target(group), Group: group})
}

// target is the id of group's INGESTING aggregate, or of the next one.
func (s *State) target(group string) uint64 {
	if a := s.ingesting[group]; a != nil {
		return a.id
	}
	return s.nextID
}

// onTick moves the clock. A tick at the clock's time says nothing new
// and leaves no decision; one before it, or further ahead of the time it
// was stored than MaxTickAhead, is ignored with the reason: time does not
// go back, and one wrong clock must not close aggregates early and hold
// the clock in the future.
func (s *State) onTick(b *events.Batch, e *events.Tick, stored time.Time) {
	t := e.Time.UTC()
	switch {
	case t.Equal(s.now):
		return
	case t.Before(s.now):
		s.ignore(b, "", fmt.Sprintf("tick: %s is before the fold's clock %s", t.Format(time.RFC3339Nano), s.now.Format(time.RFC3339Nano)))
		return
	case s.cfg.MaxTickAhead > 0 && !stored.IsZero() && t.Sub(stored) > s.cfg.MaxTickAhead:
		s.ignore(b, "", fmt.Sprintf("tick: %s is %s ahead of when the input log stored it (%s), more than the %s allowed",
			t.Format(time.RFC3339Nano), t.Sub(stored), stored.UTC().Format(time.RFC3339Nano), s.cfg.MaxTickAhead))
		return
	}
	first := s.now.IsZero()
	s.now = t
	if first {
		s.startClocks(b)
	} else {
		s.waitClock(b)
	}
	s.dealClocks(b) // deals.go
}

// startClocks starts the wait of the aggregates opened before the first
// tick, in id order: until a tick, the fold has no time to give them.
func (s *State) startClocks(b *events.Batch) {
	for _, id := range s.liveIDs() {
		if s.live[id].since.IsZero() {
			s.emit(b, events.Decision{Type: events.DecAggClock, Aggregate: id, At: s.now})
		}
	}
}

// waitClock releases into the pool the groups' aggregates that did not
// reach MinPayload within GroupMaxWait (in the order they opened), then
// closes every INGESTING aggregate holding MinPayload whose oldest CAR has
// waited MaxWait (in id order). Releases go first, so the CARs they give
// the pool may reach a deal at this same tick.
func (s *State) waitClock(b *events.Batch) {
	if s.cfg.GroupMaxWait > 0 {
		var due []*aggregate
		for len(s.groupQueue) > 0 && s.live[s.groupQueue[0]] == nil {
			s.groupQueue = s.groupQueue[1:]
		}
		for _, id := range s.groupQueue {
			a := s.live[id]
			if a == nil {
				continue
			}
			if s.now.Sub(a.since) < s.cfg.GroupMaxWait {
				break
			}
			if a.payload < s.cfg.MinPayload {
				due = append(due, a)
			}
		}
		for _, a := range due {
			s.release(b, a, events.ReleasedMaxWait)
		}
	}
	var due []uint64
	for id := range s.ripe {
		if s.now.Sub(s.live[id].since) >= s.cfg.MaxWait {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	for _, id := range due {
		s.closeAgg(b, s.live[id], events.ClosedMaxWait)
	}
}

// release gives the CARs of a group's INGESTING aggregate to the shared
// pool, in arrival order.
func (s *State) release(b *events.Batch, a *aggregate, why string) {
	s.emit(b, events.Decision{Type: events.DecAggReleased, Aggregate: a.id, Group: a.group, Count: len(a.members), Closed: why})
	s.requeue(b, a.id)
}

// liveIDs is the ids of the INGESTING aggregates, in order.
func (s *State) liveIDs() []uint64 {
	ids := make([]uint64, 0, len(s.live))
	for id := range s.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *State) onClose(b *events.Batch, e *events.AggregateClose) {
	a := s.live[e.Aggregate]
	if a == nil {
		s.ignore(b, "", fmt.Sprintf("aggregate %d is not INGESTING", e.Aggregate))
		return
	}
	s.closeAgg(b, a, events.ClosedForced)
}

// onSettingsChange records the policy an operator orders, from this input
// on. A change of GroupBy releases every group's INGESTING aggregate into
// the pool, in id order: the groups they were filled for are no longer the
// policy's.
func (s *State) onSettingsChange(b *events.Batch, e *events.SettingsChange) {
	cfg, err := e.Apply(s.cfg)
	if err != nil {
		s.ignore(b, "", err.Error())
		return
	}
	if cfg == s.cfg {
		s.ignore(b, "", "settings.change: the settings are already "+cfg.String())
		return
	}
	regroup := cfg.GroupBy != s.cfg.GroupBy
	s.emit(b, events.Decision{Type: events.DecLogSettings, Settings: &cfg})
	if regroup {
		for _, id := range s.liveIDs() {
			// A release may close the pool's aggregate full: it is gone.
			if a := s.live[id]; a != nil && a.group != "" {
				s.release(b, a, events.ReleasedSettings)
			}
		}
	}
}

// closeAgg fixes the layout of an INGESTING aggregate and computes its
// piece commitment.
func (s *State) closeAgg(b *events.Batch, a *aggregate, why string) {
	agg, err := frc58.New(s.cfg.DealSize, layout(a.members))
	if err != nil {
		// add only admits pieces that fit, so this cannot happen.
		panic(fmt.Sprintf("aggregator: aggregate %d does not build: %v", a.id, err))
	}
	c := agg.Commitment()
	s.emit(b, events.Decision{Type: events.DecAggReady, Aggregate: a.id, Piece: c.MustV2().String(), PieceV1: c.V1().String(),
		PieceSize: c.Padded, Payload: a.payload, Count: len(a.members), Closed: why, Group: a.group})
}

// layout orders members for the deal: largest piece first, arrival order
// among equals.
func layout(members []member) []piece.Commitment {
	pieces := make([]piece.Commitment, len(members))
	for i, m := range members {
		pieces[i] = piece.Commitment{Root: m.root, Padded: m.padded, Payload: m.size}
	}
	laid, _ := frc58.Arrange(pieces)
	return laid
}

func (s *State) onOffered(b *events.Batch, e *events.DealOffered) {
	a, reason := s.closedIn(e.Aggregate, Ready)
	if a == nil {
		s.ignore(b, "", "deal.offered: "+reason)
		return
	}
	s.emit(b, events.Decision{Type: events.DecAggOffered, Aggregate: a.id})
}

func (s *State) onOfferFailed(b *events.Batch, e *events.OfferFailed) {
	a, reason := s.closedIn(e.Aggregate, Ready)
	if a == nil {
		s.ignore(b, "", "deal.offer_failed: "+reason)
		return
	}
	s.emit(b, events.Decision{Type: events.DecAggOfferFailed, Aggregate: a.id, Reason: e.Reason, HTTPStatus: e.Status, At: e.RetryAt})
}

// closedIn finds a closed aggregate that is in one of states.
func (s *State) closedIn(id uint64, states ...string) (*aggregate, string) {
	a, ok := s.closed[id]
	if !ok {
		return nil, fmt.Sprintf("aggregate %d is not closed", id)
	}
	for _, st := range states {
		if a.state == st {
			return a, ""
		}
	}
	return nil, fmt.Sprintf("aggregate %d is %s", id, a.state)
}

func (s *State) onReport(b *events.Batch, e *events.DealReport) {
	if reason := dealsTooBig(e.Deals); reason != "" {
		s.ignore(b, "", "deal.report: "+reason)
		return
	}
	id, reason := s.resolve(e.Aggregate)
	if reason != "" {
		s.ignore(b, "", "deal.report: "+reason)
		return
	}
	switch e.Status {
	case events.StatusFailed:
		s.onDealFailed(b, id, e.Reason)
	case events.StatusPublished, events.StatusActive:
		s.onDeals(b, id, e)
	default:
		s.ignore(b, "", "deal.report: unknown status "+events.Excerpt(e.Status))
	}
}

// dealsTooBig is the reason a report's deals cannot be recorded as they
// are, or "".
func dealsTooBig(deals []events.Deal) string {
	if len(deals) > events.MaxDeals {
		return fmt.Sprintf("%d deals, more than the %d one report may carry", len(deals), events.MaxDeals)
	}
	for i, d := range deals {
		if len(d.Provider) > events.MaxProvider {
			return fmt.Sprintf("deals[%d]: provider %s is longer than %d bytes", i, events.Excerpt(d.Provider), events.MaxProvider)
		}
	}
	return ""
}

// resolve finds an aggregate by numeric id or piece CID (v1 or v2).
func (s *State) resolve(ref string) (uint64, string) {
	if id, err := strconv.ParseUint(ref, 10, 64); err == nil {
		if _, ok := s.closed[id]; ok {
			return id, ""
		}
		return 0, fmt.Sprintf("aggregate %d is not closed", id)
	}
	if len(ref) > events.MaxCIDText {
		return 0, "aggregate " + events.Excerpt(ref) + ": neither an id nor a piece CID"
	}
	c, err := piece.Parse(ref, s.cfg.DealSize)
	if err != nil {
		return 0, fmt.Sprintf("aggregate %s: %v", events.Excerpt(ref), err)
	}
	id, ok := s.byRoot[c.Root]
	if !ok {
		return 0, fmt.Sprintf("no aggregate has piece %s", ref)
	}
	return id, ""
}

func (s *State) onDeals(b *events.Batch, id uint64, e *events.DealReport) {
	a := s.closed[id]
	if !s.takesDeals(a) {
		s.ignore(b, "", fmt.Sprintf("deal.report: aggregate %d is %s", id, a.state))
		return
	}
	var fresh []events.Deal
	seen := map[dealKey]struct{}{}
	for _, d := range e.Deals {
		k := dealKey{d.Provider, d.DealID}
		if _, ok := a.deals[k]; ok {
			continue
		}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		fresh = append(fresh, d)
	}
	if len(fresh) == 0 {
		s.ignore(b, "", fmt.Sprintf("deal.report: no new deals for aggregate %d", id))
		return
	}
	s.emit(b, events.Decision{Type: events.DecAggDeals, Aggregate: id, Status: e.Status, Deals: fresh})
}

func (s *State) ignore(b *events.Batch, car, reason string) {
	s.emit(b, events.Decision{Type: events.DecInputIgnored, Car: car, Reason: reason})
}

// canonical is the CID's canonical string form (base32 for v1), so that two
// spellings of one CAR are one CAR. Validate has checked it parses.
func canonical(s string) string {
	c, err := events.CanonicalCID(s)
	if err != nil {
		return s
	}
	return c
}
