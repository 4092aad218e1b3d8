package node

import (
	"context"
	"errors"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/receipts"
	"github.com/ferry-dev/ferry/spade"
)

// DealConfig connects ferry to a deal engine.
type DealConfig struct {
	// Engine is the URL offers are POSTed to; empty means no offers.
	Engine      string
	EngineToken string
	// OfferDir, when set, receives a copy of every offer.
	OfferDir string
	// ReportURL is the reportUrl sent with offers; empty derives it from
	// the HTTP listen address.
	ReportURL string
	// RetryAfter is the wait before a failed offer is made again.
	RetryAfter time.Duration
	// Oracle is the URL of a Spade-style replica document; empty means none.
	Oracle         string
	OracleInterval time.Duration
}

func (n *Node) setupDeals() {
	active := func() bool { return n.Runner.Status().Leader }
	n.Receipter = &receipts.Publisher{JS: n.JS, Store: n.Store, Projector: n.Projector,
		Subjects: n.cfg.Subjects, Active: active, Log: n.log}
	d := n.cfg.Deals
	if d.Engine != "" {
		n.Dealer = &spade.Dealer{
			Offerer: &spade.Offerer{URL: d.Engine, Token: d.EngineToken, OfferDir: d.OfferDir, Logger: n.log,
				OnAttempt: n.metrics.observeEngine},
			Store: n.Store, ReportURL: n.reportURL(), Publish: n.publish, Active: active, RetryAfter: d.RetryAfter, Log: n.log,
			OnOffer: n.metrics.observeOffer,
		}
	}
	if d.Oracle != "" {
		n.Oracle = &spade.OraclePoller{URL: d.Oracle, Interval: d.OracleInterval, Logger: n.log, Want: n.ownsPiece}
	}
}

func (n *Node) runDeals(ctx context.Context) {
	n.goRun("receipts", func() error { return n.Receipter.Run(ctx) })
	if n.Dealer != nil {
		n.goRun("dealer", func() error { return n.Dealer.Run(ctx) })
		n.goRun("dealer-resume", func() error { return n.offerReady(ctx) })
	}
	if n.Oracle != nil {
		n.goRun("oracle", func() error {
			err := n.Oracle.Run(ctx, n.publishReports)
			if ctx.Err() != nil {
				return nil
			}
			return err
		})
	}
}

func (n *Node) publish(ctx context.Context, ev events.Event) error {
	_, err := n.Pub.Publish(ctx, ev)
	return err
}

func (n *Node) publishReports(ctx context.Context, reps []events.DealReport) error {
	if !n.Runner.Status().Leader {
		// The poller forgets what a failed handle saw, so the leader (or
		// this process once it leads) publishes it.
		return errors.New("not leading: the leader publishes oracle deals")
	}
	for i := range reps {
		if err := n.publish(ctx, &reps[i]); err != nil {
			return err
		}
	}
	return nil
}

// ownsPiece keeps oracle replicas of ferry's own aggregates.
func (n *Node) ownsPiece(pieceV1 string) bool {
	_, err := n.Store.Aggregate(pieceV1, 0, 0)
	return err == nil
}

// onApplied offers every aggregate that just closed or that the fold wants
// offered again (aggregate.retry), and hands every CAR
// that waits for its piece to the piece workers.
func (n *Node) onApplied(entries []projections.LoggedBatch) {
	for _, e := range entries {
		for _, d := range e.Batch.Decisions {
			switch {
			case (d.Type == events.DecAggReady || d.Type == events.DecAggRetry) && n.Dealer != nil:
				n.Dealer.Enqueue(d.Aggregate)
			case d.Type == events.DecCarQueued:
				select {
				case n.work <- workItem(d):
				case <-n.done:
					return
				}
			}
		}
	}
}

// offerReady offers the READY aggregates each time this process gains the
// lead, once the projection has caught up: offers interrupted by a restart
// or a change of leader are made again.
func (n *Node) offerReady(ctx context.Context) error {
	for {
		if !n.waitLead(ctx, true) {
			return nil
		}
		if err := n.Projector.WaitFor(ctx, n.Runner.Status().AggSeq); err != nil {
			return nil
		}
		if err := n.Dealer.EnqueueReady(); err != nil {
			return err
		}
		if !n.waitLead(ctx, false) {
			return nil
		}
	}
}

// waitLead waits until leading is lead; false when ctx ends first.
func (n *Node) waitLead(ctx context.Context, lead bool) bool {
	for n.Runner.Status().Leader != lead {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return true
}

// reportURL is the reportUrl of offers: the configured one, or this
// process's own API.
func (n *Node) reportURL() string {
	if n.cfg.Deals.ReportURL != "" {
		return n.cfg.Deals.ReportURL
	}
	return "http://" + n.HTTPAddr() + "/v1/deals/report"
}
