package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/packworker"
	"github.com/nats-io/nats.go"
)

const packWorkerUsage = `pack-worker --nats URL [--source-map FROM=TO]… [--jobs N] [flags]

Builds the CAR jobs of ferry pack --nats runs (docs/packing.md, Workers):
each job names the tree it reads and the pack's output directory it
writes the CAR into, at the paths ferry pack has them; this machine must
have both there (a shared file system) or where --source-map maps them.`

func runPackWorker(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("pack-worker", packWorkerUsage, stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's streams")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	jobs := fs.Int("jobs", runtime.NumCPU(), "CARs built at once")
	var specs strList
	fs.Var(&specs, "source-map", "`FROM=TO`: a job's path under the directory FROM is read and written under TO here (repeatable; the longest FROM that matches wins)")
	attempts := fs.Int("pack-attempts", 5, "attempts of a CAR job before it is dead-lettered and its pack fails")
	auth := natsAuthFlags(fs, natsembed.RoleFerry)
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger(stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	if fs.NArg() != 0 || *jobs < 1 || *attempts < 1 {
		fs.Usage()
		return fmt.Errorf("%w: pack-worker takes flags only, --jobs and --pack-attempts at least 1", errUsage)
	}
	sm, err := packworker.ParseSourceMap(specs)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	nc, js, err := auth.connect(*natsURL, "ferry pack-worker", nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	fmt.Fprintf(stdout, "pack-worker: %d jobs at once on %s\n", *jobs, *natsURL)
	pool := packworker.New(js, packworker.Config{
		Subjects: jetlog.Subjects{Prefix: *prefix}, Workers: *jobs, SourceMap: sm, MaxDeliver: *attempts,
		Log: log,
	})
	return untilStopped(ctx, stdout, "pack-worker", pool.Run)
}
