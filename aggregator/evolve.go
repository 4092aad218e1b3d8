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
		if !s.recorded {
			s.origin = *d.Settings
		} else if d.Settings.GroupBy != s.cfg.GroupBy {
			// A CAR's group was decided under the old path, which names no
			// group any more: the CARs still waiting for a piece go to the
			// pool, as the groups' aggregates do (onSettingsChange).
			for car, q := range s.queued {
				if q.group != "" {
					q.group = ""
					s.queued[car] = q
				}
			}
		}
		s.cfg, s.recorded = *d.Settings, true
		s.ripen()
	case events.DecCarQueued:
		if d.Record == nil {
			return invalid(d, "no record")
		}
		s.accepted.Put(keyOf(d.Car), uint64(printOf(d.Record.Size, d.Record.MD5)))
		s.queued[d.Car] = queuedCar{size: d.Record.Size, claim: d.Piece, group: d.Group}
	case events.DecCarAdded:
		return s.evolveAdded(d)
	case events.DecCarRejected:
		if _, ok := s.queued[d.Car]; ok {
			delete(s.queued, d.Car)
			s.accepted.Delete(keyOf(d.Car))
		}
	case events.DecInputIgnored:
	case events.DecAggClock:
		a := s.live[d.Aggregate]
		if a == nil {
			return invalid(d, "no such INGESTING aggregate")
		}
		a.since = d.At
	case events.DecAggReleased:
		return s.evolveReleased(d)
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

// ingest returns the INGESTING aggregate of d's group with d's id, opening
// it if the group has none and the id is next.
func (s *State) ingest(d events.Decision) (*aggregate, error) {
	a := s.ingesting[d.Group]
	switch {
	case a != nil && a.id == d.Aggregate:
		return a, nil
	case a == nil && d.Aggregate == s.nextID:
		a = &aggregate{id: s.nextID, group: d.Group, state: Ingesting, since: s.now}
		s.nextID++
		s.ingesting[a.group], s.live[a.id] = a, a
		if a.group != "" {
			s.groupQueue = append(s.groupQueue, a.id)
		}
		return a, nil
	}
	return nil, invalid(d, "not the INGESTING aggregate of its group")
}

func (s *State) join(a *aggregate, m member) {
	a.members = append(a.members, m)
	a.used += m.padded
	a.payload += m.size
	s.ingestingCARs++
	if a.payload >= s.cfg.MinPayload {
		s.ripe[a.id] = struct{}{}
	}
}

// finish takes an INGESTING aggregate out of the live set, into the
// closed ones, in state.
func (s *State) finish(a *aggregate, state string) {
	s.ingestingCARs -= len(a.members)
	a.state = state
	s.closed[a.id] = a
	delete(s.ingesting, a.group)
	delete(s.live, a.id)
	delete(s.ripe, a.id)
}

// ripen finds the INGESTING aggregates that hold MinPayload again, after
// the settings or the whole state changed.
func (s *State) ripen() {
	clear(s.ripe)
	for id, a := range s.live {
		if a.payload >= s.cfg.MinPayload {
			s.ripe[id] = struct{}{}
		}
	}
}

func (s *State) evolveReleased(d events.Decision) error {
	a := s.live[d.Aggregate]
	if a == nil || a.group == "" || a.group != d.Group {
		return invalid(d, "not the INGESTING aggregate of a group")
	}
	if d.Count != len(a.members) {
		return invalid(d, fmt.Sprintf("it holds %d CARs", len(a.members)))
	}
	s.finish(a, Released)
	return nil
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
	a := s.live[d.Aggregate]
	if a == nil || a.group != d.Group {
		return invalid(d, "not an INGESTING aggregate of its group")
	}
	c, err := piece.Parse(d.Piece, 0)
	if err != nil {
		return invalid(d, err.Error())
	}
	s.finish(a, Ready)
	s.byRoot[c.Root] = a.id
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
	from, reason := s.closedIn(d.From, DealFailed, Released)
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
	// Ingesting is the INGESTING aggregates (the pool's and the groups'),
	// IngestingCount the CARs in them.
	Ingesting, IngestingCount int
}

// Counts returns the state's sizes.
func (s *State) Counts() Counts {
	return Counts{Accepted: s.accepted.Len(), Queued: len(s.queued), Closed: len(s.closed),
		Ingesting: len(s.live), IngestingCount: s.ingestingCARs}
}
