// Package fetchworker runs fetch workers: they take pinned CIDs from the
// fetch work queue (workqueue, shared by any number of workers on any
// number of machines), fetch each DAG once through fetch.Fetcher into the
// CAR store, and report the outcome on the input log: pin.fetching when
// an attempt begins, car.replicated and then pin.fetched when the CAR is
// stored, pin.failed when the pin cannot be fetched.
//
// # Rules
//
//   - The work queue's rules hold (see workqueue): one item per CID, one
//     worker at a time on it, InProgress heartbeats while it fetches,
//     backoff by attempt, a dead letter after the last.
//   - What fetch calls final (too large, invalid) fails the pin at once,
//     without a retry. A DAG no source has is retried until its deadline,
//     the time it was first requested plus Config.Timeout, whatever the
//     attempt, and then fails "not found at any source": kubo cannot tell
//     missing content from slow content, so only a deadline ends the
//     wait. Anything else (a source down, a stall) is retried with
//     backoff and, when the deliveries run out, dead-lettered with the pin
//     failed for the last reason.
//   - A cancellation (Cancel) removes the CID's waiting item and ends the
//     running fetch's context on every worker; that attempt is
//     acknowledged without a retry and without pin.failed (the pin was
//     withdrawn, not failed), and fetch removes its spool file.
//   - The outcome is published before the item is acknowledged, so a
//     crash in between repeats the work, never loses it. A repeat is
//     harmless: the CAR store keeps the first copy of a CAR, and every
//     event a repeat publishes is the one the first attempt published
//     (replicatedAt is the item's Since, not the clock), so the input
//     log's message ids take it once.
package fetchworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/fetch"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config. A fetch fails for minutes, not seconds, when it
// fails for a reason a retry can mend (a gateway restarting, a peer
// coming online), so the ladder waits minutes.
const (
	DefaultMaxDeliver = 5
	DefaultAckWait    = time.Minute
)

// DefaultBackoff is the wait before each retry of an unavailable DAG.
var DefaultBackoff = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute}

// Item is one CID's work on the queue.
type Item struct {
	CID string `json:"cid"`
	// Origins are the pin's origins (fetch.Request.Origins).
	Origins []string `json:"origins,omitempty"`
	// Source is carried into the car.replicated of the fetched CAR.
	Source json.RawMessage `json:"source,omitempty"`
	// Since is when the CID was first requested: a DAG no source has
	// fails at Since + Config.Timeout.
	Since time.Time `json:"since"`
}

// Config of a pool of workers.
type Config struct {
	Subjects jetlog.Subjects
	// Workers is the number of CIDs fetched at once (default 1).
	Workers int
	// Fetcher fetches and stores the DAGs.
	Fetcher *fetch.Fetcher
	// Timeout is how long after its first request a CID no source has
	// is looked for (fetch.DefaultTimeout if zero).
	Timeout time.Duration
	// MaxDeliver is how often an unavailable DAG is tried before it is
	// dead (DefaultMaxDeliver if zero).
	MaxDeliver int
	// Backoff is the wait before each retry, by attempt; the last repeats
	// (DefaultBackoff if empty).
	Backoff []time.Duration
	// AckWait is how long a worker may stay silent before its item goes
	// to another (DefaultAckWait if zero); workers heartbeat at a third.
	AckWait time.Duration
	Log     *slog.Logger
}

// Queue is the fetch work queue under sub: FERRY_FETCH, one item per CID
// on <prefix>work.fetch.<cid>, dead letters on FERRY_FETCH_DLQ.
func Queue(sub jetlog.Subjects) workqueue.Queue {
	if sub.Prefix == "" {
		sub = jetlog.DefaultSubjects
	}
	return workqueue.Queue{
		Name: "fetch work", Stream: jetlog.StreamFetch, Subject: sub.FetchWork(""), Consumer: jetlog.FetchConsumer,
		DeadStream: jetlog.StreamFetchDLQ, DeadSubject: sub.FetchDeadLetter(""), Attempts: "fetch",
	}
}

// Check says whether it can be queued: its CID must parse, since it is
// the item's subject.
func (it Item) Check() error {
	if _, err := cid.Decode(it.CID); err != nil {
		return fmt.Errorf("fetch work: cid %q: %w", it.CID, err)
	}
	return nil
}

// Enqueue puts a CID's work item on the queue. The queue keeps at most one
// item per CID, so enqueuing a CID that waits already changes nothing.
func Enqueue(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, it Item) error {
	if err := it.Check(); err != nil {
		return err
	}
	data, err := json.Marshal(it)
	if err != nil {
		return err
	}
	return workqueue.Enqueue(ctx, js, Queue(sub), it.CID, data)
}

// Cancel withdraws the fetch of a CID: its waiting item leaves the queue
// and every worker fetching it stops (without pin.failed). A worker that
// takes the item as it is cancelled finds it gone from the queue and
// stops too.
func Cancel(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, c string) error {
	if sub.Prefix == "" {
		sub = jetlog.DefaultSubjects
	}
	st, err := js.Stream(ctx, jetlog.StreamFetch)
	if err != nil {
		return err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(sub.FetchWork(c))); err != nil {
		return fmt.Errorf("cancel fetch of %s: %w", c, err)
	}
	nc := js.Conn()
	if err := nc.Publish(sub.FetchCancel(c), nil); err != nil {
		return fmt.Errorf("cancel fetch of %s: %w", c, err)
	}
	// The flush makes the broadcast reach the server before Cancel
	// returns; nats.go wants a deadline for it.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return nc.FlushWithContext(fctx)
}

// errCancelled is the cause of a fetch's context a cancellation ended.
var errCancelled = errors.New("pin cancelled")

// Pool is a running set of workers.
type Pool struct {
	cfg Config
	js  jetstream.JetStream
	pub *jetlog.Publisher
	wq  *workqueue.Workers

	mu      sync.Mutex
	running map[string]map[*job]struct{} // CID → its fetches in this process
}

// job is one running fetch, cancelled through its context.
type job struct{ cancel context.CancelCauseFunc }

// New returns a pool on js.
func New(js jetstream.JetStream, cfg Config) *Pool {
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects = jetlog.DefaultSubjects
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = fetch.DefaultTimeout
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	p := &Pool{cfg: cfg, js: js, pub: jetlog.NewPublisher(js, cfg.Subjects), running: map[string]map[*job]struct{}{}}
	p.wq = workqueue.New(js, Queue(cfg.Subjects), workqueue.Config{
		Workers: cfg.Workers, MaxDeliver: cfg.MaxDeliver, Backoff: cfg.Backoff, AckWait: cfg.AckWait,
		Dead: p.dead, Log: cfg.Log,
	}, p.work)
	return p
}

// Run listens for cancellations and works until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	sub, err := p.js.Conn().Subscribe(p.cfg.Subjects.FetchCancels(), func(m *nats.Msg) {
		p.cancel(m.Subject[len(p.cfg.Subjects.FetchCancel("")):])
	})
	if err != nil {
		return fmt.Errorf("fetch cancellations: %w", err)
	}
	defer sub.Unsubscribe()
	return p.wq.Run(ctx)
}

// cancel ends every fetch of c running in this process.
func (p *Pool) cancel(c string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for j := range p.running[c] {
		j.cancel(errCancelled)
	}
}

// start registers a fetch of c, cancellable by cancel, until done runs.
func (p *Pool) start(ctx context.Context, c string) (context.Context, func()) {
	fctx, cancel := context.WithCancelCause(ctx)
	j := &job{cancel: cancel}
	p.mu.Lock()
	if p.running[c] == nil {
		p.running[c] = map[*job]struct{}{}
	}
	p.running[c][j] = struct{}{}
	p.mu.Unlock()
	return fctx, func() {
		p.mu.Lock()
		delete(p.running[c], j)
		if len(p.running[c]) == 0 {
			delete(p.running, c)
		}
		p.mu.Unlock()
		cancel(nil)
	}
}

// work handles one delivery of a CID's item.
func (p *Pool) work(ctx context.Context, j workqueue.Job) error {
	var it Item
	if err := json.Unmarshal(j.Data, &it); err != nil {
		return workqueue.Drop("unreadable work item", err)
	}
	root, err := cid.Decode(it.CID)
	if err != nil || it.CID != j.Key {
		return workqueue.Drop("unreadable work item", fmt.Errorf("cid %q on item %q: %v", it.CID, j.Key, err))
	}
	log := p.cfg.Log.With("cid", it.CID, "delivery", j.Attempt)
	fctx, done := p.start(ctx, it.CID)
	defer done()
	// Registered now: a cancellation from here on reaches this fetch. One
	// that came before it took the item off the queue.
	if gone, err := p.withdrawn(ctx, j.Seq); err != nil {
		return err
	} else if gone {
		log.Info("fetch cancelled before it began")
		return nil
	}
	if err := p.publish(ctx, &events.PinFetching{CID: it.CID, Attempt: j.Attempt, At: time.Now().UTC()}); err != nil {
		return err
	}
	res, err := p.cfg.Fetcher.Fetch(fctx, fetch.Request{Root: root, Origins: it.Origins})
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // stopping: the item goes to another worker
	case errors.Is(context.Cause(fctx), errCancelled):
		log.Info("fetch cancelled")
		return nil
	case err == nil:
		return p.fetched(ctx, it, res, log)
	case fetch.Final(err):
		log.Warn("fetch failed", "err", err)
		return p.publish(ctx, &events.PinFailed{CID: it.CID, Reason: err.Error(), At: time.Now().UTC()})
	case errors.Is(err, fetch.ErrNotFound):
		deadline := it.Since.Add(p.cfg.Timeout)
		left := time.Until(deadline)
		if left <= 0 {
			log.Warn("not found until the deadline", "err", err, "since", it.Since)
			reason := fmt.Sprintf("%v (looked for %v since %s)", fetch.ErrNotFound, p.cfg.Timeout, it.Since.UTC().Format(time.RFC3339))
			return p.publish(ctx, &events.PinFailed{CID: it.CID, Reason: reason, At: time.Now().UTC()})
		}
		return workqueue.RetryAfter(min(p.backoff(j.Attempt), left), err)
	default:
		return err
	}
}

// withdrawn says whether the item of seq has left the work stream (Cancel
// purged it).
func (p *Pool) withdrawn(ctx context.Context, seq uint64) (bool, error) {
	st, err := p.js.Stream(ctx, jetlog.StreamFetch)
	if err != nil {
		return false, err
	}
	_, err = st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	return false, err
}

func (p *Pool) backoff(attempt int) time.Duration {
	return p.cfg.Backoff[min(attempt-1, len(p.cfg.Backoff)-1)]
}

// fetched publishes a stored CAR: car.replicated, so the aggregator folds
// it, and then pin.fetched, so the pin is pinned only once its CAR is on
// its way into an aggregate.
func (p *Pool) fetched(ctx context.Context, it Item, res *fetch.Result, log *slog.Logger) error {
	pc, err := res.Commitment.V2()
	if err != nil {
		return workqueue.Drop("no piece CID", err) // a DAG over the largest piece: fetch's MaxSize forbids it
	}
	rep := &events.CarReplicated{
		Car: res.Car.String(), Size: res.Size, MD5: res.MD5, URLs: []string{res.URL},
		Piece: pc.String(), ReplicatedAt: it.Since.UTC().Format(time.RFC3339Nano), Source: it.Source,
	}
	if err := p.publish(ctx, rep); err != nil {
		return err
	}
	if err := p.publish(ctx, &events.PinFetched{
		CID: it.CID, Car: rep.Car, Size: res.Size, Piece: rep.Piece, URL: res.URL, Source: res.Source, At: time.Now().UTC(),
	}); err != nil {
		return err
	}
	log.Info("fetched", "car", rep.Car, "size", res.Size, "piece", rep.Piece, "source", res.Source)
	return nil
}

// dead fails a pin whose item ran out of attempts, with the last reason.
func (p *Pool) dead(ctx context.Context, j workqueue.Job, why string) error {
	var it Item
	if err := json.Unmarshal(j.Data, &it); err != nil {
		return err // work read it: not reached
	}
	return p.publish(ctx, &events.PinFailed{CID: it.CID, Reason: fmt.Sprintf("gave up after %d attempts: %s", j.Attempt, why), At: time.Now().UTC()})
}

// publish appends an outcome to the input log; a failure is the queue's
// RetrySoon, since the work itself is done.
func (p *Pool) publish(ctx context.Context, ev events.Event) error {
	if _, err := p.pub.Publish(ctx, ev); err != nil {
		return workqueue.RetrySoon(fmt.Errorf("fetch outcome not published: %w", err))
	}
	return nil
}
