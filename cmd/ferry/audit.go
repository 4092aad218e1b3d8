package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/audit"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
)

// errViolations makes ferry audit exit non-zero when an invariant fails.
var errViolations = errors.New("invariants violated")

func runAudit(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("audit", "audit [flags]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's streams")
	server := serverFlags(fs, "", ", to check the read models against the logs (empty: skip)")
	deal := size(defaultDeal)
	// The log's recorded settings decide; these flags are for a log made
	// before settings were recorded, and one given that disagrees with
	// the log's is refused.
	fs.Var(&deal, "deal-size", "the deal size (default: the log's)")
	minPayload := size(0)
	fs.Var(&minPayload, "min-payload", "the min payload (default: the log's)")
	maxWait := fs.Duration("max-wait", 4*time.Hour, "the max wait (default: the log's)")
	verify := fs.Bool("verify-pieces", false, "--verify-pieces (default: the log's)")
	dealClock := dealClockFlags(fs, "%s (default: the log's)")
	auth := natsAuthFlags(fs, natsembed.RoleAdmin)
	progress := progressFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	show, err := progress(stderr)
	if err != nil {
		return err
	}
	if minPayload == 0 {
		minPayload = size(aggregator.DefaultMinPayload(uint64(deal)))
	}
	// A slow consumer's drops are counted, not printed as they come: the
	// audit's own check of every log's sequences says whether anything
	// was missed (the ordered consumer re-reads from a gap).
	var drops atomic.Int64
	nc, js, err := auth.connect(*natsURL, "ferry audit", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			drops.Add(1)
			return
		}
		fmt.Fprintf(stderr, "nats: %v\n", err)
	}))
	if err != nil {
		return err
	}
	defer nc.Close()
	defer func() {
		if n := drops.Load(); n > 0 {
			fmt.Fprintf(stderr, "nats dropped messages %d times (slow consumer); every log's sequences were checked for gaps\n", n)
		}
	}()
	var views audit.Views
	if server.server != "" {
		api := server.client()
		views = func(ctx context.Context, car string) (*wire.CarView, error) { return api.Car(ctx, car) }
	}
	cfg := dealClock(events.Settings{DealSize: uint64(deal), MinPayload: uint64(minPayload), MaxWait: *maxWait, VerifyPieces: *verify})
	var read atomic.Int64
	stop := startProgressLines(stderr, show, func(elapsed time.Duration) string {
		n := read.Load()
		return fmt.Sprintf("audit: %d log entries read, %s, %s", n, perSecond(n, elapsed), elapsed.Round(time.Second))
	})
	rep, err := audit.RunCounting(ctx, js, cfg, givenSettings(fs), views, &read)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stdout, "audit stopped after reading %d log entries: nothing proven\n", read.Load())
		}
		return err
	}
	rep.Print(stdout)
	if !rep.OK() {
		return fmt.Errorf("%w: %d", errViolations, len(rep.Violations))
	}
	return nil
}
