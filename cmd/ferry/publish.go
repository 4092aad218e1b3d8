package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishStats counts what a publish run did.
type publishStats struct {
	sent, accepted, duplicate, invalid, failed int
}

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("publish", "publish [flags] [--file F | -]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's input stream")
	prefix := fs.String("prefix", events.DefaultPrefix, "subject prefix")
	file := fs.String("file", "", "read JSON lines from `path` ('-' for stdin)")
	inFlight := fs.Int("in-flight", 1024, "publishes awaiting acknowledgement at most")
	deal := size(defaultDeal)
	fs.Var(&deal, "deal-size", "deal size the events are checked against locally")
	var ev events.CarReplicated
	var urls strList
	fs.StringVar(&ev.Car, "car", "", "CAR CID (one event from flags)")
	fs.Uint64Var(&ev.Size, "size", 0, "CAR size in bytes")
	fs.StringVar(&ev.MD5, "md5", "", "CAR md5, 32 hex digits")
	fs.Var(&urls, "url", "a URL the CAR can be fetched from (repeatable)")
	fs.StringVar(&ev.Piece, "piece", "", "piece CID (v2, or v1 with --piece-size)")
	fs.Uint64Var(&ev.PieceSize, "piece-size", 0, "padded piece size for a v1 piece CID")
	fs.StringVar(&ev.ReplicatedAt, "replicated-at", "", "RFC 3339 time of replication")
	source := fs.String("source", "", "JSON object carried through to receipts")
	dir := fs.String("dir", "", "publish every .car file of `dir` (CID, size, md5 and piece computed here)")
	urlBase := fs.String("url-base", "http://"+defaultHTTP+"/cars", "with --dir: the URL the directory is served under")
	noPiece := fs.Bool("no-piece", false, "with --dir: leave the piece CID to ferry's piece workers")
	auth := natsAuthFlags(fs, natsembed.RolePublish)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 1 && fs.Arg(0) == "-" {
		*file = "-"
	}
	if *dir == "" && *file == "" && ev.Car == "" {
		fs.Usage()
		return fmt.Errorf("%w: give --car and its fields, --file or --dir", errUsage)
	}
	if *source != "" && !json.Valid([]byte(*source)) {
		return fmt.Errorf("%w: --source is not JSON: %q", errUsage, *source)
	}
	opts, err := auth.options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, append(opts, nats.Name("ferry publish"))...)
	if err != nil {
		return auth.connectError(*natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(*inFlight))
	if err != nil {
		return err
	}
	p := &publisher{pub: events.NewPublisher(js, events.Subjects{Prefix: *prefix}), js: js, deal: uint64(deal),
		max: *inFlight, stderr: stderr, tty: isTerminal(stderr), start: time.Now()}
	switch {
	case *dir != "":
		err = p.dir(ctx, *dir, *urlBase, !*noPiece)
	case *file == "":
		if ev.Car == "" {
			fs.Usage()
			return fmt.Errorf("%w: give --car and its fields, or --file", errUsage)
		}
		ev.URLs = urls
		if *source != "" {
			ev.Source = json.RawMessage(*source)
		}
		err = p.one(ctx, 0, &ev)
	default:
		err = p.lines(ctx, *file, stdin)
	}
	if ferr := p.flush(ctx); err == nil {
		err = ferr
	}
	p.summary(stdout)
	if err == nil && p.failed > 0 {
		err = fmt.Errorf("%d events were not stored", p.failed)
	}
	return err
}

type publisher struct {
	publishStats
	pub     *events.Publisher
	js      jetstream.JetStream
	deal    uint64
	max     int
	pending []jetstream.PubAckFuture
	stderr  io.Writer
	tty     bool
	start   time.Time
	shown   time.Time
}

func (p *publisher) dir(ctx context.Context, dir, urlBase string, withPiece bool) error {
	evs, err := dirEvents(dir, urlBase, withPiece)
	if err != nil {
		return err
	}
	for i, ev := range evs {
		if err := p.one(ctx, i+1, ev); err != nil {
			return err
		}
	}
	return nil
}

func (p *publisher) lines(ctx context.Context, file string, stdin io.Reader) error {
	r := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var ev events.CarReplicated
		if err := json.Unmarshal([]byte(text), &ev); err != nil {
			p.invalid++
			fmt.Fprintf(p.stderr, "line %d: not a car.replicated event: %v (skipped)\n", line, err)
			continue
		}
		if err := p.one(ctx, line, &ev); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return sc.Err()
}

// one publishes an event. An event that fails local validation is still
// published, so its rejection is on record in ferry, and reported here.
func (p *publisher) one(ctx context.Context, line int, ev *events.CarReplicated) error {
	if reason := ev.Validate(p.deal); reason != "" {
		p.invalid++
		fmt.Fprintf(p.stderr, "line %d: %s: %s (published; ferry records the rejection)\n", line, ev.Car, reason)
	}
	fut, err := p.pub.PublishAsync(ev)
	if err != nil {
		return fmt.Errorf("line %d: %w", line, err)
	}
	p.sent++
	p.pending = append(p.pending, fut)
	for len(p.pending) >= p.max {
		p.settle(ctx, p.pending[0])
		p.pending = p.pending[1:]
	}
	p.progress(false)
	return nil
}

func (p *publisher) settle(ctx context.Context, f jetstream.PubAckFuture) {
	select {
	case ack := <-f.Ok():
		if ack.Duplicate {
			p.duplicate++
		} else {
			p.accepted++
		}
	case err := <-f.Err():
		p.failed++
		fmt.Fprintf(p.stderr, "publish failed: %v\n", err)
	case <-ctx.Done():
		p.failed++
	}
}

func (p *publisher) flush(ctx context.Context) error {
	for _, f := range p.pending {
		p.settle(ctx, f)
	}
	p.pending = nil
	p.progress(true)
	return ctx.Err()
}

func (p *publisher) progress(final bool) {
	if !p.tty || (!final && time.Since(p.shown) < 500*time.Millisecond) {
		return
	}
	p.shown = time.Now()
	rate := float64(p.sent) / time.Since(p.start).Seconds()
	fmt.Fprintf(p.stderr, "\rpublished %d (stored %d, duplicate %d, invalid %d) %.0f/s ", p.sent, p.accepted, p.duplicate, p.invalid, rate)
	if final {
		fmt.Fprintln(p.stderr)
	}
}

func (p *publisher) summary(w io.Writer) {
	took := time.Since(p.start)
	fmt.Fprintf(w, "published %d events in %s (%.0f/s): stored %d, duplicate %d, invalid %d, failed %d\n",
		p.sent, took.Round(time.Millisecond), float64(p.sent)/took.Seconds(), p.accepted, p.duplicate, p.invalid, p.failed)
}

// isTerminal reports whether w is a character device.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
