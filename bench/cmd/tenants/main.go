// Command tenants makes a synthetic multi-tenant workload: many small
// tenants and a few big ones uploading over simulated weeks, each
// car.replicated carrying its source {"account", "space", "upload"}, with
// a tick every simulated minute and some car.piece follow-ups. It is
// deterministic: the same flags give the same inputs, byte for byte.
//
//	tenants [flags] > inputs.jsonl
//
// writes the inputs as JSON lines, one event a line, in log order.
//
//	tenants -nats nats://127.0.0.1:4222 -data ./ferry-data [flags]
//
// publishes them into a ferry's input stream (FERRY_IN), signing in with
// the admin NKey of ferry serve's data dir (or -nats-nkey): ticks and
// car.piece are ferry's own inputs, which a storage service's role may
// not publish. The fold only takes time from ticks, and a ferry serve
// with its default --max-tick-ahead ignores a tick more than 5 minutes
// ahead of when the log stored it, so a log of simulated weeks published
// in seconds needs a ferry serve started with --max-tick-ahead 0 and
// --tick 0 (no wall-clock ticks of its own): see docs/policies.md.
//
//	tenants report -html docs/policies-example.html -md docs/policies.md
//
// folds the default workload under the four grouping strategies with
// package whatif and writes the HTML report and the table of
// docs/policies.md (make policies-report).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "tenants:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "report" {
		return runReport(args[1:], stderr)
	}
	fs := flag.NewFlagSet("tenants", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := configFlags(fs)
	out := fs.String("o", "-", "write the JSON lines to this `file` ('-': stdout)")
	natsURL := fs.String("nats", "", "publish into FERRY_IN at this NATS `URL` instead of writing JSON lines")
	data := fs.String("data", "./ferry-data", "ferry serve's data `dir`: its nats/admin.nk signs in when -nats-nkey is not given")
	nkey := fs.String("nats-nkey", "", "NATS NKey seed `file` of a role that may publish ticks (ferry or admin)")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix (ferry serve's --prefix)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	w, err := Generate(*c)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "tenants:", w.Summary())
	if *natsURL != "" {
		if *nkey == "" {
			// ferry serve's embedded server wants the admin's NKey; a
			// NATS server of one's own may want none.
			if seed := natsembed.SeedFile(node.CredentialsDir(*data), natsembed.RoleAdmin); fileExists(seed) {
				*nkey = seed
			}
		}
		return publish(ctx, *natsURL, *nkey, jetlog.Subjects{Prefix: *prefix}, w.Events, stderr)
	}
	return writeLines(*out, stdout, w.Events)
}

// configFlags binds the workload's knobs, DefaultConfig's values as
// defaults.
func configFlags(fs *flag.FlagSet) *Config {
	c := DefaultConfig()
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed: the same seed and flags give the same inputs")
	fs.DurationVar(&c.Period, "period", c.Period, "simulated time the uploads arrive in")
	fs.DurationVar(&c.Tick, "tick", c.Tick, "simulated time between two ticks")
	fs.IntVar(&c.Small, "small", c.Small, "small tenants (accounts)")
	fs.IntVar(&c.Big, "big", c.Big, "big tenants")
	fs.Uint64Var(&c.SmallMin, "small-min", c.SmallMin, "least bytes a small tenant uploads over the period")
	fs.Uint64Var(&c.SmallMax, "small-max", c.SmallMax, "most bytes a small tenant uploads over the period (a free plan's quota)")
	fs.Uint64Var(&c.BigMin, "big-min", c.BigMin, "least bytes a big tenant uploads over the period")
	fs.Uint64Var(&c.BigMax, "big-max", c.BigMax, "most bytes a big tenant uploads over the period")
	fs.Float64Var(&c.PieceLater, "piece-later", c.PieceLater, "share of CARs sent without a piece CID, a car.piece following")
	fs.Func("start", "simulated time of the first tick, RFC 3339 (default "+c.Start.Format(time.RFC3339)+")", func(v string) error {
		t, err := time.Parse(time.RFC3339, v)
		c.Start = t.UTC()
		return err
	})
	return &c
}

// Summary is one line on the workload's size.
func (w *Workload) Summary() string {
	var total uint64
	for _, t := range w.Tenants {
		total += t.Total
	}
	return fmt.Sprintf("%d inputs: %d CARs (%s) of %d small and %d big tenants, %d car.piece, %d ticks over %s",
		len(w.Events), w.CARs, gb(total), w.Config.Small, w.Config.Big, w.Pieces, w.Ticks, span(w.Config.Period))
}

// span spells a duration in days, or hours under two days.
func span(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%g days", d.Hours()/24)
	}
	return fmt.Sprintf("%g h", d.Hours())
}

// gb spells bytes in decimal units, as storage plans are sold.
func gb(n uint64) string {
	switch {
	case n >= 1e12:
		return fmt.Sprintf("%.2f TB", float64(n)/1e12)
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

func writeLines(path string, stdout io.Writer, evs []events.Event) (err error) {
	out := stdout
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}()
		out = f
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	for _, ev := range evs {
		data, err := events.Encode(ev)
		if err != nil {
			return err
		}
		bw.Write(data)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// publish appends evs to the input stream in order, a window of them
// awaiting their acknowledgement at a time.
func publish(ctx context.Context, url, seed string, sub jetlog.Subjects, evs []events.Event, stderr io.Writer) error {
	opts := []nats.Option{nats.Name("tenants")}
	if seed != "" {
		auth, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Clean(seed), err)
		}
		opts = append(opts, auth)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (ferry serve's embedded server: give its -data, or -nats-nkey)", url, err)
	}
	defer nc.Close()
	js, err := jetlog.NewJetStream(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	pub := jetlog.NewPublisher(js, sub)
	start := time.Now()
	var stored, dup int
	futures := make([]jetstream.PubAckFuture, 0, 4096)
	settle := func() error {
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					dup++
				} else {
					stored++
				}
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for _, ev := range evs {
		f, err := pub.PublishAsync(ev)
		if err != nil {
			return err
		}
		if futures = append(futures, f); len(futures) == cap(futures) {
			if err := settle(); err != nil {
				return err
			}
		}
	}
	if err := settle(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "tenants: published %d inputs (%d stored, %d duplicates) in %s\n", len(evs), stored, dup, time.Since(start).Round(time.Millisecond))
	if stored+dup != len(evs) {
		return errors.New("not every input was acknowledged")
	}
	return nil
}
