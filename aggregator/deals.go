package aggregator

import (
	"fmt"
	"slices"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
)

// The deal clock: what the fold decides about offered and failed deals as
// time passes (events.Settings.DealTimeout, MaxOffers, OfferBackoff), and the
// operator's orders about them. Like all of the fold it reads time only
// from ticks, so a replay decides the same.

// maxBackoffDoublings caps the exponent of the offer backoff, so that a
// long history of failures cannot overflow the duration.
const maxBackoffDoublings = 16

// dealClocks, on a tick, offers again the DEAL_PENDING aggregates whose
// report is overdue and puts back the CARs of failed deals whose backoff
// has ended.
func (s *State) dealClocks(b *events.Batch) {
	if s.cfg.DealTimeout > 0 {
		// pending is in offeredAt order: the overdue ones are a prefix.
		var overdue []uint64
		for _, id := range s.pending {
			if s.now.Sub(s.closed[id].offeredAt) < s.cfg.DealTimeout {
				break
			}
			overdue = append(overdue, id)
		}
		for _, id := range overdue {
			s.timedOut(b, s.closed[id])
		}
	}
	var due []uint64
	for _, id := range s.waiting {
		if !s.now.Before(s.closed[id].requeueAt) {
			due = append(due, id)
		}
	}
	for _, id := range due {
		s.requeue(b, id)
	}
}

// timedOut offers an aggregate again whose deal report is overdue, or
// gives up on it when that was its last offer. Giving up keeps its CARs:
// the engine may still report the deal, and an operator may offer it
// again.
func (s *State) timedOut(b *events.Batch, a *aggregate) {
	t := a.tries + 1
	why := fmt.Sprintf("no deal report within %s of offer %d", s.cfg.DealTimeout, t)
	if s.lastOffer(t) {
		s.emit(b, events.Decision{Type: events.DecAggFailed, Aggregate: a.id, Count: t, Reason: gaveUp(t, why)})
		return
	}
	s.emit(b, events.Decision{Type: events.DecAggRetry, Aggregate: a.id, Count: t, Reason: why + "; offering again"})
}

func (s *State) lastOffer(tries int) bool { return s.cfg.MaxOffers > 0 && tries >= s.cfg.MaxOffers }

func gaveUp(tries int, why string) string {
	return fmt.Sprintf("gave up after %d offers: %s", tries, why)
}

// backoff is the wait before the CARs of a deal that failed for the
// tries-th time are aggregated again: OfferBackoff, doubled per earlier
// failure.
func (s *State) backoff(tries int) time.Duration {
	n := min(max(tries-1, 0), maxBackoffDoublings)
	return s.cfg.OfferBackoff << n
}

// onDealFailed marks the aggregate DEAL_FAILED. Its CARs go back, in their
// arrival order and before anything that arrives later, at once or after
// the backoff; or, when this was their last offer, they stay in it.
func (s *State) onDealFailed(b *events.Batch, id uint64, reason string) {
	a := s.closed[id]
	if a.state != Ready && a.state != DealPending {
		s.ignore(b, "", fmt.Sprintf("deal.report: aggregate %d is %s, a failure changes nothing", id, a.state))
		return
	}
	if reason == "" {
		reason = "deal engine reported failure without a reason"
	}
	t := a.tries + 1
	switch {
	case s.lastOffer(t):
		s.emit(b, events.Decision{Type: events.DecAggFailed, Aggregate: id, Count: t, Reason: gaveUp(t, reason)})
	case s.cfg.OfferBackoff > 0:
		s.emit(b, events.Decision{Type: events.DecAggFailed, Aggregate: id, Count: t, Reason: reason, At: s.now.Add(s.backoff(t))})
	default:
		s.emit(b, events.Decision{Type: events.DecAggFailed, Aggregate: id, Count: t, Reason: reason})
		s.requeue(b, id)
	}
}

// requeue aggregates the CARs of a failed or released aggregate again, in
// their arrival order: as many as fit the INGESTING aggregate per run,
// closing it full when the next does not fit. A released group's CARs go
// to the shared pool; a failed deal's go back to the group it was filled
// for, while the fold groups CARs at all.
func (s *State) requeue(b *events.Batch, id uint64) {
	from := s.closed[id]
	group := from.group
	if from.state == Released || s.cfg.GroupBy == "" {
		group = ""
	}
	members := from.members
	for first := 0; first < len(members); {
		n := s.room(group, members[first:])
		if n == 0 {
			s.closeAgg(b, s.ingesting[group], events.ClosedFull)
			continue
		}
		s.emit(b, events.Decision{Type: events.DecCarsRequeued, From: id, First: first, Count: n, Aggregate: s.target(group), Group: group})
		first += n
	}
}

// room counts how many of ms, in order, fit group's INGESTING aggregate
// (or a new one).
func (s *State) room(group string, ms []member) int {
	var used uint64
	count := 0
	if a := s.ingesting[group]; a != nil {
		used, count = a.used, len(a.members)
	}
	n := 0
	for _, m := range ms {
		if !frc58.Fits(s.cfg.DealSize, used+m.padded, count+n+1) {
			break
		}
		used += m.padded
		n++
	}
	return n
}

// onReoffer is the operator's order to offer an aggregate again now: one
// that is READY (waiting for an offer that failed), DEAL_PENDING (its
// report overdue) or DEAL_FAILED with its CARs still in it (given up, or
// waiting for the backoff). A given-up aggregate starts a fresh count of
// offers.
func (s *State) onReoffer(b *events.Batch, e *events.AggregateReoffer) {
	a, reason := s.closedIn(e.Aggregate, Ready, DealPending, DealFailed)
	if a == nil {
		s.ignore(b, "", "aggregate.reoffer: "+reason)
		return
	}
	tries := a.tries
	if a.state == DealFailed {
		if !s.holds(a) {
			s.ignore(b, "", fmt.Sprintf("aggregate.reoffer: aggregate %d is DEAL_FAILED and its CARs were aggregated again", a.id))
			return
		}
		tries = 0
	}
	s.emit(b, events.Decision{Type: events.DecAggRetry, Aggregate: a.id, Count: tries, Reason: "offered again by the operator" + parenthesized(e.By)})
}

// takesDeals says whether reported deals count for a: any aggregate that
// was offered and still holds its CARs. A DEAL_FAILED one that does was
// given up on (or waits for its backoff), and the engine may still make
// the deal late: the deal is real, so its CARs have it.
func (s *State) takesDeals(a *aggregate) bool {
	switch a.state {
	case Ready, DealPending, DealProcessed:
		return true
	case DealFailed:
		return s.holds(a)
	}
	return false
}

// holds says whether a DEAL_FAILED aggregate still holds its CARs.
func (s *State) holds(a *aggregate) bool { return len(a.members) > 0 }

// onFail is the operator's order to treat a deal as failed: what a failed
// report does.
func (s *State) onFail(b *events.Batch, e *events.AggregateFail) {
	a, reason := s.closedIn(e.Aggregate, Ready, DealPending)
	if a == nil {
		s.ignore(b, "", "aggregate.fail: "+reason)
		return
	}
	why := "failed by the operator" + parenthesized(e.By)
	if e.Reason != "" {
		why += ": " + e.Reason
	}
	s.onDealFailed(b, a.id, why)
}

// parenthesized is " (who)", or "" when who is empty: the name an
// operator's order gave, after "by the operator".
func parenthesized(who string) string {
	if who == "" {
		return ""
	}
	return " (" + who + ")"
}

// Evolve's part: the lists the deal clock reads.

func (s *State) evolveOffered(d events.Decision) error {
	if err := s.setState(d, DealPending, Ready); err != nil {
		return err
	}
	a := s.closed[d.Aggregate]
	a.offeredAt = s.now
	s.pending = append(s.pending, a.id)
	return nil
}

func (s *State) evolveRetry(d events.Decision) error {
	a, reason := s.closedIn(d.Aggregate, Ready, DealPending, DealFailed)
	if a == nil {
		return invalid(d, reason)
	}
	if a.state == DealFailed && !s.holds(a) {
		return invalid(d, "its CARs were aggregated again")
	}
	s.settle(a)
	a.state, a.tries = Ready, d.Count
	return nil
}

func (s *State) evolveFailed(d events.Decision) error {
	a, reason := s.closedIn(d.Aggregate, Ready, DealPending)
	if a == nil {
		return invalid(d, reason)
	}
	s.settle(a)
	a.state, a.tries = DealFailed, d.Count
	if !d.At.IsZero() {
		a.requeueAt = d.At
		s.waiting = append(s.waiting, a.id)
	}
	return nil
}

// settle takes an aggregate off the deal clock's lists.
func (s *State) settle(a *aggregate) {
	if a.state == DealPending {
		s.pending = slices.DeleteFunc(s.pending, func(id uint64) bool { return id == a.id })
		a.offeredAt = time.Time{}
	}
	if !a.requeueAt.IsZero() {
		s.waiting = slices.DeleteFunc(s.waiting, func(id uint64) bool { return id == a.id })
		a.requeueAt = time.Time{}
	}
}
