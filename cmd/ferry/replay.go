package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/projections"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
)

func runReplay(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("replay", "replay [flags]", stderr)
	data := fs.String("data", "./ferry-data", "ferry's data `dir` (stop ferry serve first)")
	natsURL := fs.String("nats", "", "NATS `URL` with ferry's streams (default: start the embedded server on --data)")
	deal := size(0)
	fs.Var(&deal, "deal-size", "refuse to replay unless the log's deal size is this (default: the log's, as recorded)")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix (ferry serve's --prefix)")
	auth := natsAuthFlags(fs, natsembed.RoleFerry)
	progress := progressFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	show, err := progress(stderr)
	if err != nil {
		return err
	}
	if st, err := os.Stat(*data); err != nil || !st.IsDir() {
		return fmt.Errorf("no ferry data dir at %s", *data)
	}
	// Taking the read models' lock fails while ferry serve holds them,
	// before a second NATS server touches its store.
	if err := lockFree(node.ReadModelPath(*data), defaultDeal, stdout); err != nil {
		return err
	}
	js, done, err := dialData(auth, *natsURL, *data, "ferry replay")
	if err != nil {
		return err
	}
	defer done()
	var applied atomic.Int64
	stop := startProgressLines(stderr, show, func(elapsed time.Duration) string {
		n := applied.Load()
		return fmt.Sprintf("replay: %d batches, %s, %s", n, perSecond(n, elapsed), elapsed.Round(time.Second))
	})
	err = Replay(ctx, js, node.ReadModelPath(*data), uint64(deal), &applied, stdout)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stdout, "replay stopped after %d batches; the read models are as they were\n", applied.Load())
		}
		return err
	}
	return ReplayPins(ctx, js, jetlog.Subjects{Prefix: *prefix}, node.PinsPath(*data), stdout)
}

// dialData connects to natsURL, or when it is "" to an embedded NATS
// server it starts on the data dir's store (ferry serve must not be
// running); done closes the connection and stops that server.
func dialData(auth *natsAuth, natsURL, data, name string) (js jetstream.JetStream, done func(), err error) {
	url, shutdown := natsURL, func() {}
	if url == "" {
		// The data dir's users, as ferry serve runs it: nobody else on this
		// machine can write while the command reads.
		creds, err := natsembed.LoadCredentials(node.CredentialsDir(data))
		if err != nil {
			return nil, nil, err
		}
		s, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(data, "jetstream"), Listen: "127.0.0.1:0", Auth: creds})
		if err != nil {
			return nil, nil, err
		}
		url, shutdown = s.ClientURL(), s.Shutdown
	}
	nc, js, err := auth.connect(url, name)
	if err != nil {
		shutdown()
		return nil, nil, err
	}
	return js, func() { nc.Close(); shutdown() }, nil
}

// ReplayPins rebuilds the pins read model at path from the pin events of
// the input log, beside the old file, which it replaces once whole.
func ReplayPins(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, path string, stdout io.Writer) error {
	start := time.Now()
	aside := path + ".replay"
	if err := os.Remove(aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pins read model: %w", err)
	}
	store, err := projections.OpenPins(aside)
	if err != nil {
		return err
	}
	if err := projections.NewPinProjector(js, sub, store, projections.PinHooks{}).Run(ctx, false); err != nil {
		store.Close()
		os.Remove(aside)
		return err
	}
	through := store.Seq()
	if err := store.Close(); err != nil {
		return err
	}
	// serve holds pins.db only while it holds views.db, whose lock
	// Replay checked.
	if err := os.Rename(aside, path); err != nil {
		return fmt.Errorf("replace pins read model: %w", err)
	}
	fmt.Fprintf(stdout, "replayed the pins (input log through sequence %d) in %s\n", through, time.Since(start).Round(time.Millisecond))
	return nil
}

// Replay rebuilds the read models at path from the aggregate log,
// counting the batches applied in applied and reporting a final count. The log's recorded settings
// decide the rebuild (dealSize, when not 0, must agree with them). The new
// read models are built beside the old ones and replace them only once
// they are whole: a replay that fails leaves the old file as it was.
func Replay(ctx context.Context, js jetstream.JetStream, path string, dealSize uint64, applied *atomic.Int64, stdout io.Writer) error {
	start := time.Now()
	settings, err := aggregator.LogSettings(ctx, js)
	if err != nil {
		return err
	}
	want := events.Settings{DealSize: dealSize}
	if settings != nil {
		if _, err := aggregator.Reconcile(settings, want, map[string]bool{"dealSize": dealSize != 0}); err != nil {
			return err
		}
		dealSize = settings.DealSize
	} else if dealSize == 0 {
		dealSize = defaultDeal // a log made before settings were recorded
	}
	if err := lockFree(path, dealSize, stdout); err != nil {
		return err
	}
	aside := path + ".replay"
	if err := projections.Remove(aside); err != nil {
		return fmt.Errorf("read models: %w", err)
	}
	store, err := projections.Open(aside, dealSize)
	if err != nil {
		return err
	}
	defer func() {
		if store != nil {
			store.Close()
			_ = projections.Remove(aside)
		}
	}()
	p := projections.NewProjector(js, store, nil)
	p.OnApplied = func(entries []projections.LoggedBatch) { applied.Add(int64(len(entries))) }
	if err := p.Run(ctx, false); err != nil {
		return err
	}
	through := store.AggSeq()
	if err := store.Close(); err != nil {
		return err
	}
	store = nil
	// The lock again: a ferry serve started meanwhile must not have its
	// file replaced under it.
	if err := lockFree(path, dealSize, stdout); err != nil {
		_ = projections.Remove(aside)
		return err
	}
	if err := os.Rename(aside, path); err != nil {
		return fmt.Errorf("replace read models: %w", err)
	}
	fmt.Fprintf(stdout, "replayed %d batches (aggregate log through sequence %d) in %s\n",
		applied.Load(), through, time.Since(start).Round(time.Millisecond))
	return nil
}

// lockFree checks that no ferry serve holds the read models at path. Only
// a lock timeout means one does: bbolt locks the file before reading it,
// so any other error is an unreadable file, which replay is there to
// rebuild.
func lockFree(path string, dealSize uint64, stdout io.Writer) error {
	probe, err := projections.Open(path, dealSize)
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return fmt.Errorf("%w (is ferry serve running on this data dir?)", err)
	case err != nil:
		fmt.Fprintf(stdout, "read models unreadable (%v); rebuilding\n", err)
		return nil
	}
	return probe.Close()
}
