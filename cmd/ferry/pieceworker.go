package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/ferry-dev/ferry/fetch"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/nats-io/nats.go"
)

// workerFlags are the piece worker flags shared by serve and piece-worker;
// the caller sets c.Fetch.Policy from the returned flags once parsed.
func workerFlags(fs *flag.FlagSet, c *pieceworker.Config) *policyFlags {
	maxSize := (*size)(&c.MaxSize)
	fs.Var(maxSize, "max-car-size", "largest CAR a piece worker accepts (default: the largest that fits a deal)")
	fs.DurationVar(&c.Fetch.Timeout, "fetch-timeout", fetch.DefaultTimeout,
		"bound on one download (a CAR by a piece worker, a pin's DAG from one source by a fetch worker), and how long a pin no source has is looked for")
	fs.DurationVar(&c.Fetch.StallTimeout, "stall-timeout", time.Minute, "a download that sends nothing for this long fails")
	fs.IntVar(&c.MaxDeliver, "piece-attempts", 5, "attempts of a CAR's piece work before it is rejected and dead-lettered")
	return fetchPolicyFlags(fs)
}

func runPieceWorker(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("piece-worker", "piece-worker [flags]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's streams")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	deal := size(defaultDeal)
	fs.Var(&deal, "deal-size", "ferry's deal size (bounds the CAR size)")
	var cfg pieceworker.Config
	policy := workerFlags(fs, &cfg)
	fs.IntVar(&cfg.Workers, "workers", runtime.NumCPU(), "CARs worked on at once")
	auth := natsAuthFlags(fs, natsembed.RoleFerry)
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger(stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	if cfg.Fetch.Policy, err = policy.policy(); err != nil {
		return err
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = piece.Unpadded(frc58.MaxPiece(uint64(deal)))
	}
	cfg.Subjects = jetlog.Subjects{Prefix: *prefix}
	cfg.Log = log
	nc, js, err := auth.connect(*natsURL, "ferry piece-worker", nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	fmt.Fprintf(stdout, "piece-worker: %d workers on %s\n", cfg.Workers, *natsURL)
	return untilStopped(ctx, stdout, "piece-worker", pieceworker.New(js, cfg).Run)
}
