package node

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/internal/audit"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
)

func storeViews(n *Node) audit.Views {
	return func(_ context.Context, car string) (*wire.CarView, error) { return n.Store.Car(car) }
}

func TestAuditPassesOnAHealthyRunAndNamesWhatATamperedLogBreaks(t *testing.T) {
	d := startDeals(t, 12, spade.SimConfig{Delay: 5 * time.Millisecond}, "")
	d.publishAll(t)
	d.waitProcessed(t, 60*time.Second)
	cfg := d.n.cfg.Fold
	ctx := context.Background()
	testutil := func() *audit.Report {
		rep, err := audit.Run(ctx, d.nt.JS, cfg, nil, storeViews(d.n))
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	var rep *audit.Report
	waitFor(t, "receipts for every CAR and a clean audit", func() bool { rep = testutil(); return rep.OK() })
	if rep.Receipts < len(d.cars) || rep.ViewsChecked < len(d.cars) || rep.Aggregates == 0 {
		t.Fatalf("audit checked too little: %+v", rep)
	}

	// A rogue batch puts an aggregated CAR into a second aggregate.
	car := d.cars[0].CID.String()
	v, _ := d.n.Store.Car(car)
	rogue, _ := json.Marshal(events.Batch{In: 1 << 40, Decisions: []events.Decision{{
		Type: events.DecCarAdded, Car: car, Piece: v.Piece, PieceSize: v.PieceSize, Aggregate: 999,
	}}})
	if _, err := d.nt.JS.Publish(ctx, jetlog.DefaultSubjects.Decisions(), rogue); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Run(ctx, d.nt.JS, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := ""
	for _, v := range rep.Violations {
		text += v.Concerns + ": " + v.Problem + "\n"
	}
	// The refold names the rogue batch as one the fold does not make: as a
	// surplus at the end, or as a difference when the live aggregator
	// appended after it.
	// Its forged input number (1<<40) is named too, and costs the audit
	// nothing: the check does not walk up to it.
	if rep.OK() || !strings.Contains(text, car) || !strings.Contains(text, "the fold of") ||
		!strings.Contains(text, "says it folded input 1099511627776") {
		t.Fatalf("tampered log audited as:\n%s", text)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
