package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pack"
	"github.com/ferry-dev/ferry/packworker"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const packUsage = `pack DIR --out OUT [flags]

Packs the tree at DIR into CARs ready for deals (docs/packing.md): files as
UnixFS in the unixfs-v1-2025 profile, CARs of about --car-size named
<car cid>.car, a tree CAR whose root is the whole tree, and
OUT/manifest.json saying where every file is. The same tree and flags give
the same CARs. Run it again after an interrupt and it goes on where it
stopped. With --publish each finished CAR is sent as car.replicated (with
its piece) through --server or --nats. With --nats the CAR jobs go to the
FERRY_PACK work queue and ferry pack-worker processes build them (they
read DIR and write into OUT at the same paths, or --source-map them);
the tree CAR and the manifest are made here.

Exit status: 0 packed (files that could not be read are listed and left
out); 1 an error; 2 usage.`

func runPack(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("pack", packUsage, stderr)
	out := fs.String("out", "", "output `dir` for the CARs, manifest.json and the pack's state")
	carSize := size(pack.DefaultCarSize)
	shardSize := size(pack.DefaultShardSize)
	fs.Var(&carSize, "car-size", "target bytes per CAR")
	fs.Var(&shardSize, "shard-size", "files larger are split into parts of this size, in different CARs")
	var exclude strList
	fs.Var(&exclude, "exclude", "leave out names or paths matching this `glob` (repeatable)")
	hidden := fs.Bool("hidden", false, "include names starting with '.'")
	jobs := fs.Int("jobs", runtime.NumCPU(), "CARs built at once (1: one CAR on disk at a time); with --nats each pack-worker's --jobs counts instead")
	sha := fs.Bool("sha256", false, "the manifest gives each file's SHA-256")
	publish := fs.Bool("publish", false, "publish each finished CAR as car.replicated")
	urlBase := fs.String("url-base", "", "a CAR's URL is `URL`/<car cid>.car")
	urlTemplate := fs.String("url-template", "", "a CAR's URL is this `template` with {car} replaced by its CAR CID")
	api := serverFlags(fs, "", " (with --publish; empty: publish with --nats)")
	natsURL := fs.String("nats", "", "send the CAR jobs to ferry pack-workers through this NATS `URL` (and publish there with --publish)")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "with --nats: subject prefix")
	progress := progressFlags(fs)
	// A job names paths a worker reads and writes: only ferry's own role
	// may queue one.
	auth := natsAuthFlags(fs, natsembed.RoleFerry)
	logger := logFlags(fs)
	ops, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	log, err := logger(stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	show, err := progress(stderr)
	if err != nil {
		return err
	}
	if len(ops) != 1 || *out == "" {
		fs.Usage()
		return fmt.Errorf("%w: give one DIR and --out", errUsage)
	}
	if *jobs < 1 {
		return fmt.Errorf("%w: --jobs %d: want at least 1", errUsage, *jobs)
	}
	settings, err := pack.NewSettings(uint64(carSize), uint64(shardSize), *hidden, exclude, *sha)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	url, err := carURL(*urlBase, *urlTemplate)
	if err != nil {
		return err
	}
	prog := &pack.Progress{}
	opts := pack.Options{
		Source: ops[0], Out: *out, Settings: settings, URL: url, Progress: prog,
		Builder: pack.Local{Jobs: *jobs, Progress: prog},
	}
	if *publish && url == nil {
		return fmt.Errorf("%w: --publish needs --url-base or --url-template: where ferry and the deal engine fetch each CAR", errUsage)
	}
	if !*publish && api.server != "" {
		return fmt.Errorf("%w: --server says where --publish sends; add --publish", errUsage)
	}
	var js jetstream.JetStream
	if *natsURL != "" {
		var nc *nats.Conn
		if nc, js, err = auth.connect(*natsURL, "ferry pack"); err != nil {
			return err
		}
		defer nc.Close()
		opts.Builder = &packworker.Coordinator{JS: js, Subjects: jetlog.Subjects{Prefix: *prefix}, Progress: prog,
			Log: log}
	}
	if *publish {
		send, err := packOutlet(api.server, api.token, js, *prefix)
		if err != nil {
			return err
		}
		opts.Publish = func(ctx context.Context, r *pack.Result, u string) error {
			return send(ctx, &events.CarReplicated{Car: r.Car, Size: r.Size, MD5: r.MD5, URLs: []string{u}, Piece: r.Piece, PieceSize: r.PieceSize})
		}
	}
	defer limitPackHeap()()
	stop := startPackProgress(stderr, show, prog)
	start := time.Now()
	sum, err := pack.Run(ctx, opts)
	stop()
	if err != nil && ctx.Err() != nil {
		// What is built stays: the records let the same command go on.
		fmt.Fprintf(stdout, "pack stopped after %d of %d CARs (%s of %s read) in %s; run the same command again to go on where it stopped\n",
			prog.Cars.Load(), prog.TotalCars.Load(), humanMiB(float64(prog.Bytes.Load())), humanMiB(float64(prog.TotalBytes.Load())),
			time.Since(start).Round(time.Millisecond))
		return context.Canceled
	}
	if err != nil {
		return err
	}
	printPackSummary(stdout, sum, time.Since(start))
	return nil
}

// packHeapLimit is the soft memory limit of a pack. Its live heap is
// small (read and write buffers, and the records of the CARs being built,
// which grow with their files), but the collector's default headroom
// doubles it on trees of many small files; near the limit it collects
// sooner instead. A heap that must pass the limit passes it: the limit
// never fails a pack.
const packHeapLimit = 128 << 20

// limitPackHeap sets packHeapLimit unless GOMEMLIMIT says otherwise, and
// returns what restores the limit before it (tests run packs in process).
func limitPackHeap() func() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return func() {}
	}
	old := debug.SetMemoryLimit(packHeapLimit)
	return func() { debug.SetMemoryLimit(old) }
}

// carURL is a CAR's URL from --url-base or --url-template; nil when
// neither is given.
func carURL(base, template string) (func(string) string, error) {
	switch {
	case base != "" && template != "":
		return nil, fmt.Errorf("%w: give --url-base or --url-template, not both", errUsage)
	case base != "":
		base = strings.TrimRight(base, "/")
		return func(car string) string { return base + "/" + car + ".car" }, nil
	case template != "":
		if !strings.Contains(template, "{car}") {
			return nil, fmt.Errorf("%w: --url-template %q has no {car}", errUsage, template)
		}
		return func(car string) string { return strings.ReplaceAll(template, "{car}", car) }, nil
	}
	return nil, nil
}

// packOutlet sends one car.replicated and waits for its answer: ferry's
// verdict over HTTP (accepted or duplicate is sent), JetStream's
// acknowledgement over NATS (js, the connection of --nats).
func packOutlet(server, token string, js jetstream.JetStream, prefix string) (func(context.Context, *events.CarReplicated) error, error) {
	switch {
	case server != "" && js != nil:
		return nil, fmt.Errorf("%w: --server or --nats, not both", errUsage)
	case js != nil:
		pub := client.NewPublisher(js, prefix)
		return func(ctx context.Context, ev *events.CarReplicated) error {
			_, err := pub.Publish(ctx, ev)
			return err
		}, nil
	case server != "":
		c := client.NewHTTP(server)
		c.Token = token
		return func(ctx context.Context, ev *events.CarReplicated) error {
			res, err := c.Submit(ctx, []*events.CarReplicated{ev})
			if err != nil {
				return err
			}
			if len(res) != 1 {
				return fmt.Errorf("ferry answered %d results for one CAR", len(res))
			}
			if r := res[0]; r.Status != wire.Accepted && r.Status != wire.Duplicate {
				b, _ := json.Marshal(r)
				return fmt.Errorf("ferry refused it: %s", b)
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("%w: --publish needs --server or --nats", errUsage)
}

// startPackProgress draws "pack: 1,234/5,678 files, 1.2 GiB of 4.0 GiB,
// 3/10 CARs, 120 MiB/s, ETA 25s, 12s" on stderr when show is set.
func startPackProgress(stderr io.Writer, show bool, prog *pack.Progress) func() {
	return startProgressLines(stderr, show, func(elapsed time.Duration) string {
		n, total := prog.Bytes.Load(), prog.TotalBytes.Load()
		rate := float64(n) / elapsed.Seconds()
		line := fmt.Sprintf("pack: %d/%d files, %s of %s, %d/%d CARs, %s/s",
			prog.Files.Load(), prog.TotalFiles.Load(), humanMiB(float64(n)), humanMiB(float64(total)),
			prog.Cars.Load(), prog.TotalCars.Load(), humanMiB(rate))
		if rate > 0 && total > n {
			line += fmt.Sprintf(", ETA %s", time.Duration(float64(total-n)/rate*float64(time.Second)).Round(time.Second))
		}
		return line + ", " + elapsed.Round(time.Second).String()
	})
}

func printPackSummary(w io.Writer, s *pack.Summary, took time.Duration) {
	var bytes uint64
	for _, r := range s.Results {
		bytes += r.Size
	}
	fmt.Fprintf(w, "packed %d files (%s) and %d directories into %d CARs (%s, %d built now) in %s\n",
		s.Plan.Files, humanMiB(float64(s.Plan.Bytes)), s.Plan.Dirs, len(s.Results), humanMiB(float64(bytes)), s.Built, took.Round(time.Millisecond))
	fmt.Fprintf(w, "tree root %s\nmanifest %s\n", s.Root, s.Manifest)
	if len(s.Skipped) > 0 {
		fmt.Fprintf(w, "left out %d:\n", len(s.Skipped))
		for _, sk := range s.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", sk.Path, sk.Reason)
		}
	}
}
