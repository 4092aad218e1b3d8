package aggregator

import (
	"errors"
	"fmt"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/piece"
)

// ErrInvalidDecision is returned by Evolve for a decision that does not fit
// the state: a log written by another events.Settings, or a corrupt log.
var ErrInvalidDecision = errors.New("decision does not fit the state")

// Evolve changes the state by one decision. It is the only place a decision
// changes the state; the only other writes are the batch header's, the
// position and the clock (see State), so the restart path (Replay) needs
// nothing but Evolve and each batch's header.
func (s *State) Evolve(d events.Decision) error {
	switch d.Type {
	case events.DecLogSettings:
		if d.Settings == nil {
			return invalid(d, "no settings")
		}
		s.cfg, s.recorded = *d.Settings, true
	case events.DecCarQueued:
		if d.Record == nil {
			return invalid(d, "no record")
		}
		s.accepted.Put(keyOf(d.Car), uint64(printOf(d.Record.Size, d.Record.MD5)))
		s.queued[d.Car] = queuedCar{size: d.Record.Size, claim: d.Piece}
	case events.DecCarAdded:
		return s.evolveAdded(d)
	case events.DecCarRejected:
		if _, ok := s.queued[d.Car]; ok {
			delete(s.queued, d.Car)
			s.accepted.Delete(keyOf(d.Car))
		}
	case events.DecInputIgnored:
	case events.DecAggClock:
		if s.open == nil || s.open.id != d.Aggregate {
			return invalid(d, "no such INGESTING aggregate")
		}
		s.open.since = d.At
	case events.DecAggReady:
		return s.evolveReady(d)
	case events.DecAggOffered:
		return s.evolveOffered(d)
	case events.DecAggRetry:
		return s.evolveRetry(d)
	case events.DecAggOfferFailed:
		return s.setState(d, Ready, Ready)
	case events.DecAggDeals:
		return s.evolveDeals(d)
	case events.DecAggFailed:
		return s.evolveFailed(d)
	case events.DecCarsRequeued:
		return s.evolveRequeued(d)
	default:
		return invalid(d, "unknown type")
	}
	return nil
}

func invalid(d events.Decision, why string) error {
	return fmt.Errorf("%w: %s of aggregate %d car %q: %s", ErrInvalidDecision, d.Type, d.Aggregate, d.Car, why)
}

// ingest returns the INGESTING aggregate with id, opening it if id is next.
func (s *State) ingest(d events.Decision) (*aggregate, error) {
	switch {
	case s.open != nil && s.open.id == d.Aggregate:
		return s.open, nil
	case s.open == nil && d.Aggregate == s.nextID:
		s.open = &aggregate{id: s.nextID, state: Ingesting, since: s.now}
		s.nextID++
		return s.open, nil
	}
	return nil, invalid(d, "not the INGESTING aggregate")
}

func (s *State) join(a *aggregate, m member) {
	a.members = append(a.members, m)
	a.used += m.padded
	a.payload += m.size
}

func (s *State) evolveAdded(d events.Decision) error {
	a, err := s.ingest(d)
	if err != nil {
		return err
	}
	c, err := piece.Parse(d.Piece, 0)
	if err != nil {
		return invalid(d, err.Error())
	}
	size := c.Payload
	delete(s.queued, d.Car)
	if d.Record != nil { // a queued CAR's print was kept when it was queued
		s.accepted.Put(keyOf(d.Car), uint64(printOf(d.Record.Size, d.Record.MD5)))
	}
	s.join(a, member{root: c.Root, padded: c.Padded, size: size})
	return nil
}

func (s *State) evolveReady(d events.Decision) error {
	a := s.open
	if a == nil || a.id != d.Aggregate {
		return invalid(d, "not the INGESTING aggregate")
	}
	c, err := piece.Parse(d.Piece, 0)
	if err != nil {
		return invalid(d, err.Error())
	}
	a.state = Ready
	s.closed[a.id] = a
	s.byRoot[c.Root] = a.id
	s.open = nil
	return nil
}

func (s *State) setState(d events.Decision, to string, from ...string) error {
	a, reason := s.closedIn(d.Aggregate, from...)
	if a == nil {
		return invalid(d, reason)
	}
	a.state = to
	return nil
}

func (s *State) evolveDeals(d events.Decision) error {
	a, reason := s.closedIn(d.Aggregate, Ready, DealPending, DealProcessed, DealFailed)
	if a == nil {
		return invalid(d, reason)
	}
	if !s.takesDeals(a) {
		return invalid(d, "its CARs were aggregated again")
	}
	if a.deals == nil {
		a.deals = map[dealKey]struct{}{}
	}
	for _, deal := range d.Deals {
		a.deals[dealKey{deal.Provider, deal.DealID}] = struct{}{}
	}
	s.settle(a)
	a.state = DealProcessed
	a.members = nil // a processed aggregate never re-aggregates
	return nil
}

func (s *State) evolveRequeued(d events.Decision) error {
	from, reason := s.closedIn(d.From, DealFailed)
	if from == nil {
		return invalid(d, reason)
	}
	if d.First < 0 || d.Count < 1 || d.First+d.Count > len(from.members) {
		return invalid(d, fmt.Sprintf("run [%d,+%d) outside %d members", d.First, d.Count, len(from.members)))
	}
	a, err := s.ingest(d)
	if err != nil {
		return err
	}
	s.settle(from)
	a.tries = max(a.tries, from.tries) // the CARs bring their count along
	for _, m := range from.members[d.First : d.First+d.Count] {
		s.join(a, m)
	}
	if d.First+d.Count == len(from.members) {
		from.members = nil // all placed again
	}
	return nil
}

// Counts summarises the state for metrics and logs.
type Counts struct {
	Accepted, Queued, Closed int
	Ingesting                uint64 // id of the INGESTING aggregate, 0 if none
	IngestingCount           int
}

// Counts returns the state's sizes.
func (s *State) Counts() Counts {
	c := Counts{Accepted: s.accepted.Len(), Queued: len(s.queued), Closed: len(s.closed)}
	if s.open != nil {
		c.Ingesting, c.IngestingCount = s.open.id, len(s.open.members)
	}
	return c
}
