package aggregator

import (
	"errors"
	"fmt"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/piece"
)

// InvariantModel checks DESIGN.md's invariants on an aggregate log as it
// reads it: every accepted CAR is in exactly one state, no CAR is in two
// live aggregates, every aggregate fits its deal, a group has at most one
// INGESTING aggregate and a released one gives all its CARs to the pool. It is an
// independent, deliberately simple reading of the log that shares no code
// with the fold's bookkeeping, so tests and audits can hold the fold to it.
type InvariantModel struct {
	car  map[string]string // CAR → "queued", "rejected" or "agg:<id>"
	aggs map[uint64]*modelAgg
	open map[string]uint64 // group → its INGESTING aggregate
}

type modelAgg struct {
	group   string
	state   string
	members []string
	padded  map[string]uint64
	piece   map[string]string // CAR → its piece CID
	pieceV1 string            // the aggregate's, once closed
	deals   int
}

// NewInvariantModel returns a model that has read nothing yet.
func NewInvariantModel() *InvariantModel {
	return &InvariantModel{car: map[string]string{}, aggs: map[uint64]*modelAgg{}, open: map[string]uint64{}}
}

// Cars is the number of CARs the model knows.
func (m *InvariantModel) Cars() int { return len(m.car) }

// Apply reads one batch and returns the first invariant it breaks.
func (m *InvariantModel) Apply(b events.Batch) error {
	for _, d := range b.Decisions {
		if err := m.apply(d); err != nil {
			return fmt.Errorf("input %d: %s: %w", b.In, d.Type, err)
		}
	}
	return nil
}

func (m *InvariantModel) apply(d events.Decision) error {
	switch d.Type {
	case events.DecCarQueued:
		if _, ok := m.car[d.Car]; ok && m.car[d.Car] != "rejected" {
			return fmt.Errorf("CAR %s accepted twice", d.Car)
		}
		m.car[d.Car] = "queued"
	case events.DecCarAdded:
		if st, ok := m.car[d.Car]; ok && st != "queued" && st != "rejected" {
			return fmt.Errorf("CAR %s added while %s", d.Car, st)
		}
		c, err := piece.Parse(d.Piece, 0)
		if err != nil {
			return err
		}
		return m.join(d.Aggregate, d.Group, d.Car, c.Padded, d.Piece)
	case events.DecCarRejected:
		if st, ok := m.car[d.Car]; !ok || st == "queued" {
			m.car[d.Car] = "rejected"
		}
	case events.DecAggReady:
		a, ok := m.aggs[d.Aggregate]
		if !ok || a.state != Ingesting || len(a.members) != d.Count {
			return fmt.Errorf("aggregate %d closed with %d CARs but the log put %d in it", d.Aggregate, d.Count, m.count(d.Aggregate))
		}
		if a.group != d.Group {
			return fmt.Errorf("aggregate %d of group %q closed as group %q", d.Aggregate, a.group, d.Group)
		}
		a.state, a.pieceV1 = Ready, d.PieceV1
		delete(m.open, a.group)
	case events.DecAggOffered:
		return m.move(d.Aggregate, DealPending, Ready)
	case events.DecAggDeals:
		if a := m.aggs[d.Aggregate]; a != nil {
			a.deals += len(d.Deals)
			if err := m.holds(d.Aggregate, a); err != nil {
				return err
			}
		}
		return m.move(d.Aggregate, DealProcessed, Ready, DealPending, DealProcessed, DealFailed)
	case events.DecAggFailed:
		return m.move(d.Aggregate, DealFailed, Ready, DealPending)
	case events.DecAggRetry:
		// A failed aggregate may be offered again only while it holds its
		// CARs: none of them may have moved on.
		if a := m.aggs[d.Aggregate]; a != nil {
			if err := m.holds(d.Aggregate, a); err != nil {
				return err
			}
		}
		return m.move(d.Aggregate, Ready, Ready, DealPending, DealFailed)
	case events.DecAggReleased:
		a := m.aggs[d.Aggregate]
		if a == nil || a.state != Ingesting || a.group == "" || len(a.members) != d.Count {
			return fmt.Errorf("aggregate %d released with %d CARs is not a group's INGESTING aggregate of as many", d.Aggregate, d.Count)
		}
		a.state = Released
		delete(m.open, a.group)
	case events.DecCarsRequeued:
		from := m.aggs[d.From]
		if from == nil || (from.state != DealFailed && from.state != Released) || d.First+d.Count > len(from.members) {
			return fmt.Errorf("requeue from aggregate %d run [%d,+%d) is not a failed or released aggregate's", d.From, d.First, d.Count)
		}
		if from.state == Released && d.Group != "" {
			return fmt.Errorf("released aggregate %d requeued into group %q, not the pool", d.From, d.Group)
		}
		for _, car := range from.members[d.First : d.First+d.Count] {
			if m.car[car] != fmt.Sprintf("agg:%d", d.From) {
				return fmt.Errorf("CAR %s requeued from %d but is %s", car, d.From, m.car[car])
			}
			if err := m.join(d.Aggregate, d.Group, car, from.padded[car], from.piece[car]); err != nil {
				return err
			}
		}
	}
	return nil
}

// holds checks that a failed aggregate offered again or given deals still
// holds its CARs: none of them may have moved on.
func (m *InvariantModel) holds(id uint64, a *modelAgg) error {
	if a.state != DealFailed {
		return nil
	}
	for _, car := range a.members {
		if m.car[car] != fmt.Sprintf("agg:%d", id) {
			return fmt.Errorf("failed aggregate %d moves on but its CAR %s is %s", id, car, m.car[car])
		}
	}
	return nil
}

func (m *InvariantModel) count(id uint64) int {
	if a := m.aggs[id]; a != nil {
		return len(a.members)
	}
	return 0
}

func (m *InvariantModel) join(id uint64, group, car string, padded uint64, piece string) error {
	a := m.aggs[id]
	if a == nil {
		if other, ok := m.open[group]; ok {
			return fmt.Errorf("aggregate %d opened for group %q, which has INGESTING aggregate %d", id, group, other)
		}
		m.open[group] = id
		a = &modelAgg{group: group, state: Ingesting, padded: map[string]uint64{}, piece: map[string]string{}}
		m.aggs[id] = a
	}
	if a.group != group {
		return fmt.Errorf("CAR %s of group %q joined aggregate %d of group %q", car, group, id, a.group)
	}
	a.piece[car] = piece
	if a.state != Ingesting {
		return fmt.Errorf("CAR %s joined aggregate %d which is %s", car, id, a.state)
	}
	a.members = append(a.members, car)
	a.padded[car] = padded
	m.car[car] = fmt.Sprintf("agg:%d", id)
	return nil
}

func (m *InvariantModel) move(id uint64, to string, from ...string) error {
	a := m.aggs[id]
	if a == nil {
		return fmt.Errorf("aggregate %d unknown", id)
	}
	for _, f := range from {
		if a.state == f {
			a.state = to
			return nil
		}
	}
	return fmt.Errorf("aggregate %d moved to %s from %s", id, to, a.state)
}

// Check verifies the end state: each aggregate fits a deal of dealSize and
// each CAR named by an aggregate as a live member is that aggregate's.
func (m *InvariantModel) Check(dealSize uint64) error {
	var errs []error
	live := map[string]uint64{}
	for id := uint64(1); id <= uint64(len(m.aggs)); id++ {
		a := m.aggs[id]
		if a == nil {
			errs = append(errs, fmt.Errorf("aggregate ids skip %d", id))
			continue
		}
		var used uint64
		for _, car := range a.members {
			used += a.padded[car]
		}
		if !frc58.Fits(dealSize, used, len(a.members)) {
			errs = append(errs, fmt.Errorf("aggregate %d: %d CARs of %d padded bytes exceed the deal", id, len(a.members), used))
		}
		if a.state == Released {
			for _, car := range a.members {
				if m.car[car] == fmt.Sprintf("agg:%d", id) {
					errs = append(errs, fmt.Errorf("CAR %s stays in released aggregate %d", car, id))
				}
			}
			continue
		}
		if a.state == DealFailed {
			continue
		}
		for _, car := range a.members {
			if prev, ok := live[car]; ok {
				errs = append(errs, fmt.Errorf("CAR %s in live aggregates %d and %d", car, prev, id))
			}
			live[car] = id
			if m.car[car] != fmt.Sprintf("agg:%d", id) {
				errs = append(errs, fmt.Errorf("CAR %s listed in aggregate %d but is %s", car, id, m.car[car]))
			}
		}
	}
	return errors.Join(errs...)
}

// ModelAggregate is the model's view of one aggregate.
type ModelAggregate struct {
	ID    uint64
	Group string
	State string
	// Cars in arrival order, with their piece CIDs.
	Cars, Pieces []string
	// PieceV1 is the aggregate's piece CID as the log decided it.
	PieceV1 string
	Deals   int
}

// Aggregates lists the model's aggregates by id.
func (m *InvariantModel) Aggregates() []ModelAggregate {
	out := make([]ModelAggregate, 0, len(m.aggs))
	for id := uint64(1); id <= uint64(len(m.aggs)); id++ {
		a := m.aggs[id]
		if a == nil {
			continue
		}
		ma := ModelAggregate{ID: id, Group: a.group, State: a.state, Cars: a.members, PieceV1: a.pieceV1, Deals: a.deals}
		for _, c := range a.members {
			ma.Pieces = append(ma.Pieces, a.piece[c])
		}
		out = append(out, ma)
	}
	return out
}

// CarState is where the model puts a CAR: "queued", "rejected" or
// "agg:<id>", and "" for a CAR it never saw.
func (m *InvariantModel) CarState(car string) string { return m.car[car] }

// EachCar calls fn for every CAR the model knows, in no particular order.
func (m *InvariantModel) EachCar(fn func(car, state string)) {
	for c, st := range m.car {
		fn(c, st)
	}
}
