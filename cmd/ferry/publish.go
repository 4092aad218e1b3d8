package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// postEvents and postBytes bound one POST /v1/cars, well under the
	// server's api.MaxCarsPerRequest and MaxCarsBody.
	postEvents = 512
	postBytes  = 4 << 20
	// stopGrace is how long, once the run is interrupted, answers to what
	// was already sent are awaited before the requests are cancelled: the
	// summary then counts most of them as answered, and Ctrl-C still
	// returns within a second.
	stopGrace = 300 * time.Millisecond
	// linger is how long the input may be idle before the events read so
	// far are sent in a smaller request (`tail -f log | ferry publish -`).
	linger = 100 * time.Millisecond
	// retryBusy is the wait after a 429 or 503 (the server's Retry-After).
	retryBusy = time.Second
)

// errRejected makes ferry publish exit 3: every event was answered, and
// ferry rejected some or found them in conflict with a CAR it holds.
var errRejected = errors.New("events rejected")

// conflict is ferry's answer to a copy of an accepted CAR with different
// fields (409 for a single event).
const conflict = "conflict"

const publishUsage = `publish [flags] [--file F | - | --dir D | --car CID …]

Sends car.replicated events to ferry's HTTP API (POST /v1/cars, --server)
and counts ferry's answer to each: accepted, duplicate, conflict, rejected
(with the reason, on stderr). ferry validates every event against its own
settings (deal size and the rest). With --nats the events go straight to
the input stream instead; the counts are then JetStream's acknowledgements
(stored or duplicate by message id), and ferry's verdict on each is only
in 'ferry status'. Either way an event without "car" or a line that is not
a car.replicated object is rejected here and not sent.

Ctrl-C stops within a second: nothing more is sent, answers to what was
sent are awaited briefly, and an event whose answer did not arrive is
counted "not acknowledged" (it may or may not be stored).

Exit status: 0 every event accepted or duplicate; 3 every event answered
and some rejected or in conflict; 1 events not acknowledged, or an error
(unreachable server, wrong token); 2 usage; 130 interrupted (Ctrl-C).`

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("publish", publishUsage, stderr)
	api := serverFlags(fs, defaultHTTP, "")
	natsURL := fs.String("nats", "", "publish straight to the input stream at this NATS `URL` instead of over HTTP (no validation by ferry before it is stored)")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "with --nats: subject prefix")
	file := fs.String("file", "", "read JSON lines from `path` ('-' for stdin)")
	inFlight := fs.Int("in-flight", 2048, "events awaiting ferry's answer at most")
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
	progress := progressFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	show, err := progress(stderr)
	if err != nil {
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
	if *inFlight < 1 {
		fs.Usage()
		return fmt.Errorf("%w: --in-flight %d: want at least 1", errUsage, *inFlight)
	}
	t := &tally{stderr: stderr, tty: isTerminal(stderr), start: time.Now(), nats: *natsURL != ""}
	var out outlet
	if *natsURL != "" {
		o, closeNATS, err := openNATS(*natsURL, *prefix, *inFlight, auth, t)
		if err != nil {
			return err
		}
		defer closeNATS()
		out = o
	} else {
		out = newHTTPOutlet(api.server, api.token, *inFlight, t)
	}
	p := &publisher{out: out, t: t}
	switch {
	case *dir != "":
		err = p.dir(ctx, *dir, *urlBase, !*noPiece, show)
	case *file == "":
		ev.URLs = urls
		if *source != "" {
			ev.Source = json.RawMessage(*source)
		}
		err = p.one(ctx, "--car", &ev)
	default:
		err = p.lines(ctx, *file, stdin)
	}
	if err == nil {
		err = out.flush(ctx)
	}
	out.finish(ctx)
	t.progress(true)
	t.summary(stdout)
	return t.verdict(ctx, err, out.err())
}

// item is one event to send and where it came from, for messages.
type item struct {
	at string
	ev *events.CarReplicated
}

// outlet sends events and counts ferry's answers in the tally.
type outlet interface {
	// put sends ev, or buffers it for a request; it blocks while
	// --in-flight events await answers, and fails when ctx ends or a
	// request failed as a whole (wrong token, server gone).
	put(ctx context.Context, it item) error
	// flush sends what is buffered.
	flush(ctx context.Context) error
	// finish awaits the answers to everything sent; once ctx has ended
	// it waits at most stopGrace, and counts the rest not acknowledged.
	finish(ctx context.Context)
	// err is the first failure of a whole request.
	err() error
}

type publisher struct {
	out outlet
	t   *tally
}

func (p *publisher) dir(ctx context.Context, dir, urlBase string, withPiece, show bool) error {
	var prog dirProgress
	stop := startProgressLines(p.t.stderr, show, prog.line)
	evs, names, err := dirEvents(ctx, dir, urlBase, withPiece, &prog)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(p.t.stderr, "publish: stopped after hashing %d of %d CAR files; nothing sent\n", prog.files.Load(), prog.total.Load())
		}
		return err
	}
	for i, ev := range evs {
		if err := p.one(ctx, names[i], ev); err != nil {
			return err
		}
	}
	return nil
}

// lines publishes the JSON lines of file (or stdin). Lines are read in a
// goroutine so that an interrupt is seen while a read blocks (a pipe from
// `tail -f`); when the input is idle for linger the events read so far
// are sent.
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines, readErr := scanLines(ctx, r)
	idle := time.NewTimer(linger)
	defer idle.Stop()
	n := 0
	for {
		select {
		case text, ok := <-lines:
			if !ok {
				return <-readErr
			}
			n++
			idle.Reset(linger)
			if err := p.line(ctx, n, text); err != nil {
				return err
			}
		case <-idle.C:
			if err := p.out.flush(ctx); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// scanLines sends r's lines until r ends (then the read error, or nil, on
// the second channel) or ctx ends. A read blocked in r outlives ctx; the
// process is about to exit then.
func scanLines(ctx context.Context, r io.Reader) (<-chan string, <-chan error) {
	lines, errc := make(chan string, 256), make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
		errc <- sc.Err()
	}()
	return lines, errc
}

func (p *publisher) line(ctx context.Context, n int, text string) error {
	text = strings.TrimSpace(text)
	if text == "" || strings.HasPrefix(text, "#") {
		return nil
	}
	at := fmt.Sprintf("line %d", n)
	var ev events.CarReplicated
	if err := json.Unmarshal([]byte(text), &ev); err != nil {
		p.t.refuse(at, "", fmt.Sprintf("not a car.replicated event: %v", err))
		return nil
	}
	return p.one(ctx, at, &ev)
}

// one sends an event. An event without a CAR is refused here: it names
// nothing a producer could ask about, and the log keeps every event it
// stores for good.
func (p *publisher) one(ctx context.Context, at string, ev *events.CarReplicated) error {
	if ev.Car == "" {
		p.t.refuse(at, "", "car: missing")
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := p.out.put(ctx, item{at: at, ev: ev}); err != nil {
		return err
	}
	p.t.progress(false)
	return nil
}

// tally counts the answers of a publish run; the outlets' goroutines
// report to it.
type tally struct {
	mu                                                  sync.Mutex
	accepted, duplicate, conflict, rejected, unanswered int
	stderr                                              io.Writer
	tty, nats                                           bool
	start, shown                                        time.Time
}

func (t *tally) total() int {
	return t.accepted + t.duplicate + t.conflict + t.rejected + t.unanswered
}

// refuse counts an event rejected here, never sent.
func (t *tally) refuse(at, car, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rejected++
	fmt.Fprintf(t.stderr, "%s: %srejected here, not sent: %s\n", at, carPrefix(car), reason)
}

// answer counts ferry's answer to one event.
func (t *tally) answer(it item, res wire.CarResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch res.Status {
	case wire.Accepted:
		t.accepted++
		return
	case wire.Duplicate:
		t.duplicate++
		return
	case wire.Rejected:
		t.rejected++
	case conflict:
		t.conflict++
	default: // "error": ferry could not append it
		t.unanswered++
	}
	fmt.Fprintf(t.stderr, "%s: %s%s: %s\n", it.at, carPrefix(it.ev.Car), res.Status, res.Reason)
}

// stored counts a JetStream acknowledgement (--nats).
func (t *tally) stored(dup bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if dup {
		t.duplicate++
	} else {
		t.accepted++
	}
}

// lost counts events whose answer did not arrive.
func (t *tally) lost(its []item, why error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unanswered += len(its)
	if len(its) == 1 {
		fmt.Fprintf(t.stderr, "%s: %snot acknowledged: %v\n", its[0].at, carPrefix(its[0].ev.Car), why)
	} else if len(its) > 1 {
		fmt.Fprintf(t.stderr, "%s … %s: %d events not acknowledged: %v\n", its[0].at, its[len(its)-1].at, len(its), why)
	}
}

func carPrefix(car string) string {
	if car == "" {
		return ""
	}
	return car + ": "
}

func (t *tally) progress(final bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.tty || (!final && time.Since(t.shown) < 500*time.Millisecond) {
		return
	}
	t.shown = time.Now()
	fmt.Fprintf(t.stderr, "\r%s %.0f/s ", t.counts(), float64(t.total())/time.Since(t.start).Seconds())
	if final {
		fmt.Fprintln(t.stderr)
	}
}

// counts is the answers so far, named for what they are: over HTTP
// ferry's verdicts, over NATS JetStream's acknowledgements.
func (t *tally) counts() string {
	if t.nats {
		return fmt.Sprintf("stored %d, duplicate %d, rejected here %d, not acknowledged %d",
			t.accepted, t.duplicate, t.rejected, t.unanswered)
	}
	return fmt.Sprintf("accepted %d, duplicate %d, conflict %d, rejected %d, not acknowledged %d",
		t.accepted, t.duplicate, t.conflict, t.rejected, t.unanswered)
}

func (t *tally) summary(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	took := time.Since(t.start)
	to := ""
	if t.nats {
		to = " to NATS"
	}
	fmt.Fprintf(w, "published %d events%s in %s (%.0f/s): %s\n",
		t.total(), to, took.Round(time.Millisecond), float64(t.total())/took.Seconds(), t.counts())
	if t.nats && t.accepted > 0 {
		fmt.Fprintln(w, "(stored: in the input log; ferry validates each event when it folds it: see ferry status)")
	}
}

// verdict is the run's error: an interrupt or a failure first, then
// events not acknowledged, then rejections (errRejected, exit 3).
func (t *tally) verdict(ctx context.Context, err, reqErr error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted: %d events not acknowledged (%w)", t.unanswered, ctx.Err())
	case err != nil:
		return err
	case reqErr != nil:
		return reqErr
	case t.unanswered > 0:
		return fmt.Errorf("%d events not acknowledged", t.unanswered)
	case t.rejected+t.conflict > 0:
		return fmt.Errorf("%w: %d rejected, %d in conflict", errRejected, t.rejected, t.conflict)
	}
	return nil
}

// graceDone is closed stopGrace after ctx ends.
func graceDone(ctx context.Context) (<-chan struct{}, func() bool) {
	ch := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, func() { close(ch) }) })
	return ch, stop
}

// httpOutlet posts events to POST /v1/cars, several to a request and
// several requests at once, and counts ferry's answer to each event.
type httpOutlet struct {
	api        *client.HTTP
	t          *tally
	perRequest int // events per request
	buf        []item
	raw        []json.RawMessage
	bytes      int
	slots      chan struct{}
	wg         sync.WaitGroup
	// reqs is the requests' context: not the run's, so that an interrupt
	// leaves stopGrace for answers already on their way.
	reqs   context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	first  error
}

func newHTTPOutlet(server, token string, inFlight int, t *tally) *httpOutlet {
	api := client.NewHTTP(server)
	api.Token = token
	perRequest := min(postEvents, inFlight)
	reqs := (inFlight + perRequest - 1) / perRequest
	api.HC = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: reqs}}
	ctx, cancel := context.WithCancel(context.Background())
	return &httpOutlet{api: api, t: t, perRequest: perRequest, slots: make(chan struct{}, reqs), reqs: ctx, cancel: cancel}
}

func (o *httpOutlet) put(ctx context.Context, it item) error {
	raw, err := json.Marshal(it.ev)
	if err != nil {
		o.t.refuse(it.at, it.ev.Car, err.Error())
		return nil
	}
	if len(o.buf) > 0 && o.bytes+len(raw) > postBytes {
		if err := o.flush(ctx); err != nil {
			return err
		}
	}
	o.buf, o.raw, o.bytes = append(o.buf, it), append(o.raw, raw), o.bytes+len(raw)
	if len(o.buf) >= o.perRequest {
		return o.flush(ctx)
	}
	return o.err()
}

func (o *httpOutlet) flush(ctx context.Context) error {
	if err := o.err(); err != nil || len(o.buf) == 0 {
		return err
	}
	select {
	case o.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err() // the buffered events were never sent
	}
	its, raw := o.buf, o.raw
	o.buf, o.raw, o.bytes = nil, nil, 0
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer func() { <-o.slots }()
		o.post(ctx, its, raw)
	}()
	return nil
}

// post sends one request's events. A busy server (429, 503) has read
// nothing of it, so it is sent again after a second, unless the run was
// interrupted.
func (o *httpOutlet) post(ctx context.Context, its []item, raw []json.RawMessage) {
	for {
		res, err := o.api.SubmitEncoded(o.reqs, raw)
		var api *client.APIError
		if errors.As(err, &api) && (api.Status == http.StatusTooManyRequests || api.Status == http.StatusServiceUnavailable) {
			select {
			case <-time.After(retryBusy):
				continue
			case <-ctx.Done():
				o.t.lost(its, fmt.Errorf("not sent: %w", err))
				return
			}
		}
		switch {
		case err != nil && o.reqs.Err() != nil:
			o.t.lost(its, errors.New("interrupted before ferry answered"))
		case err != nil:
			o.fail(fmt.Errorf("POST %s/v1/cars: %w", o.api.Base, err))
			o.t.lost(its, err)
		case len(res) != len(its):
			err := fmt.Errorf("POST %s/v1/cars: %d answers to %d events", o.api.Base, len(res), len(its))
			o.fail(err)
			o.t.lost(its, err)
		default:
			for i, r := range res {
				o.t.answer(its[i], r)
			}
		}
		return
	}
}

func (o *httpOutlet) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.first == nil {
		o.first = err
	}
}

func (o *httpOutlet) err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.first
}

func (o *httpOutlet) finish(ctx context.Context) {
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	grace, stop := graceDone(ctx)
	defer stop()
	select {
	case <-done:
	case <-grace:
		o.cancel()
		<-done
	}
	o.cancel()
}

// natsOutlet publishes events straight to the input stream; JetStream
// acknowledges each as stored or as a duplicate of its message id. That
// is not ferry's verdict: the fold validates the event later.
type natsOutlet struct {
	pub     *jetlog.Publisher
	t       *tally
	max     int
	pending []sentMsg
}

type sentMsg struct {
	it  item
	fut jetstream.PubAckFuture
}

func openNATS(url, prefix string, inFlight int, auth *natsAuth, t *tally) (*natsOutlet, func(), error) {
	opts, err := auth.options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Name("ferry publish"))...)
	if err != nil {
		return nil, nil, auth.connectError(url, err)
	}
	js, err := jetlog.NewJetStream(nc, jetstream.WithPublishAsyncMaxPending(inFlight))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	o := &natsOutlet{pub: jetlog.NewPublisher(js, jetlog.Subjects{Prefix: prefix}), t: t, max: inFlight}
	return o, nc.Close, nil
}

func (o *natsOutlet) put(ctx context.Context, it item) error {
	fut, err := o.pub.PublishAsync(it.ev)
	if err != nil {
		o.t.lost([]item{it}, err)
		return fmt.Errorf("%s: %w", it.at, err)
	}
	o.pending = append(o.pending, sentMsg{it, fut})
	for len(o.pending) >= o.max {
		if !o.settle(ctx.Done(), o.pending[0]) {
			return ctx.Err()
		}
		o.pending = o.pending[1:]
	}
	return nil
}

func (o *natsOutlet) flush(context.Context) error { return nil }

func (o *natsOutlet) err() error { return nil }

// settle counts m's acknowledgement, or reports false when stop came
// first. An acknowledgement already there wins over stop.
func (o *natsOutlet) settle(stop <-chan struct{}, m sentMsg) bool {
	select {
	case ack := <-m.fut.Ok():
		o.t.stored(ack.Duplicate)
		return true
	case err := <-m.fut.Err():
		o.t.lost([]item{m.it}, err)
		return true
	default:
	}
	select {
	case ack := <-m.fut.Ok():
		o.t.stored(ack.Duplicate)
		return true
	case err := <-m.fut.Err():
		o.t.lost([]item{m.it}, err)
		return true
	case <-stop:
		return false
	}
}

func (o *natsOutlet) finish(ctx context.Context) {
	grace, stop := graceDone(ctx)
	defer stop()
	var lost []item
	for _, m := range o.pending {
		if !o.settle(grace, m) {
			lost = append(lost, m.it)
		}
	}
	o.t.lost(lost, errors.New("interrupted before JetStream acknowledged"))
	o.pending = nil
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
