package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/ctxerr"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrDeposed is returned when an append to the aggregate log found another
// writer's message in the way.
var ErrDeposed = errors.New("aggregate log was appended by another writer")

// ErrAppendUnsettled is returned when an append was neither acknowledged
// nor refused within jetlog.AckWait (the stream had no leader, or the
// connection was lost): whether it was stored is unknown, so the runner
// steps down and rebuilds from what the log holds, as after ErrDeposed.
var ErrAppendUnsettled = errors.New("an append to the aggregate log was not acknowledged in time")

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Fold     events.Settings
	Subjects jetlog.Subjects
	// Holder names this process in the leadership lease.
	Holder string
	// LeaseJS, if set, is the connection the lease is held on (default:
	// the runner's); tests stall it alone.
	LeaseJS jetstream.JetStream
	// Tick is how often the leader publishes a tick; 0 means never (tests
	// publish their own).
	Tick time.Duration
	Log  *slog.Logger
	// OnBatch, if set, is called after each batch is decided and its
	// append sent (metrics); the append may still fail.
	OnBatch func(events.Batch, time.Duration)
	// OnInput, if set, is called with every input the leader applies,
	// decisions or none: the input's type (from its subject), when the
	// input log stored it, and its batch (metrics).
	OnInput func(typ string, stored time.Time, b events.Batch)
	// Snapshots, if set, is where a new leader loads its state from and
	// where the leader stores a snapshot every SnapshotEvery inputs
	// (0: DefaultSnapshotEvery); a standby prefetches from it. Without it
	// the runner rebuilds from sequence 1.
	Snapshots     Snapshots
	SnapshotEvery uint64
}

// Runner is the single writer around the fold: it holds the leadership
// lease, rebuilds the state from the aggregate log, then applies inputs
// from where the log says it stopped and appends their decisions.
//
// Goroutines: run owns the State; a reader goroutine feeds it input
// messages; keep renews the lease; tick publishes the time.
type Runner struct {
	js  jetstream.JetStream
	cfg RunnerConfig

	// snap takes and persists snapshots while leading (nil without
	// Snapshots); leadOnce sets it, the fold goroutine uses it.
	snap *snapshotter
	// cache is held by leadOnce and by a standby's prefetch: the snapshot
	// cache is never pruned under a leader's dedupe index.
	cache sync.Mutex

	mu     sync.Mutex
	counts Counts
	lead   bool
	aggSeq uint64
	lastIn uint64
}

// NewRunner returns a runner on js.
func NewRunner(js jetstream.JetStream, cfg RunnerConfig) *Runner {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Runner{js: js, cfg: cfg}
}

// Status is what a runner reports about itself.
type Status struct {
	Leader bool
	// AggSeq is the aggregate log's sequence after the appends sent.
	AggSeq uint64
	// LastIn is the last input applied; its batch, if any, is appended
	// or on its way.
	LastIn uint64
	Counts Counts
}

// Status returns the runner's view as of its last batch.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Status{Leader: r.lead, AggSeq: r.aggSeq, LastIn: r.lastIn, Counts: r.counts}
}

// Run leads whenever it holds the lease and waits as a standby otherwise,
// until ctx ends. Losing the lease or an append sends it back to standby.
func (r *Runner) Run(ctx context.Context) error {
	ljs := r.cfg.LeaseJS
	if ljs == nil {
		ljs = r.js
	}
	l, err := openLease(ctx, ljs, r.cfg.Holder)
	if err != nil {
		return err
	}
	defer r.prefetchWhileStandby(ctx)()
	for ctx.Err() == nil {
		err := l.acquire(ctx, func(holder string) {
			r.cfg.Log.Info("aggregator standby: another aggregator leads", "leader", holder)
		})
		if err != nil {
			return ctxerr.NilIfDone(ctx, err)
		}
		r.cfg.Log.Info("aggregator leading", "holder", r.cfg.Holder)
		err = r.leadOnce(ctx, l)
		l.release()
		r.setLead(false)
		if ctx.Err() != nil {
			return nil
		}
		r.cfg.Log.Warn("aggregator stepped down", "err", err)
		// A request the cluster left unanswered (a leader being elected)
		// is tried again from the lease on, as a lost race is.
		if !errors.Is(err, ErrDeposed) && !errors.Is(err, ErrLeaseLost) && !errors.Is(err, ErrAppendUnsettled) && !jetlog.Unanswered(err) {
			return err
		}
	}
	return nil
}

func (r *Runner) setLead(v bool) {
	r.mu.Lock()
	r.lead = v
	r.mu.Unlock()
}

// leadOnce rebuilds and runs until an error or the end of ctx.
func (r *Runner) leadOnce(ctx context.Context, l *lease) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	var st *State
	// The state's dedupe files are closed, and the snapshot cache given
	// up, once the snapshot persister, which writes them, has ended.
	defer r.cache.Unlock()
	defer func() { closeAccepted(st) }()
	// The helpers end before leadOnce returns, so the lease is never
	// renewed after it was released.
	defer wg.Wait()
	defer cancel(nil)
	wg.Go(func() {
		if err := l.keep(ctx); err != nil {
			cancel(err)
		}
	})
	// A leader has the snapshot cache to itself; a standby's prefetch
	// still running finishes first (the lease is kept meanwhile), and
	// what it fetched the rebuild need not.
	r.cache.Lock()
	st, aggSeq, err := Rebuild(ctx, r.js, r.cfg.Fold, r.cfg.Snapshots)
	if err != nil {
		return err
	}
	if r.snap = newSnapshotter(r.cfg.Snapshots, r.cfg.SnapshotEvery, st.LastIn(), r.cfg.Log); r.snap != nil {
		wg.Go(func() { r.snap.run(ctx) })
	}
	if err := inputsReach(ctx, r.js, st.LastIn()); err != nil {
		return err
	}
	r.publishStatus(st, aggSeq)
	r.setLead(true)
	r.cfg.Log.Info("aggregator rebuilt", "aggregateLogSeq", aggSeq, "lastInput", st.LastIn(), "state", st.Counts())
	if r.cfg.Tick > 0 {
		wg.Go(func() { r.tick(ctx) })
	}
	err = r.apply(ctx, l, st, aggSeq)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// Rebuild returns the state as of the aggregate log's last message, and
// that message's sequence: it loads the latest usable snapshot from snaps
// and evolves it through the batches after it, or, when there is none (or
// snaps is nil), evolves a fresh state through the whole log.
func Rebuild(ctx context.Context, js jetstream.JetStream, cfg events.Settings, snaps Snapshots) (*State, uint64, error) {
	st, last, err := startingState(ctx, js, cfg, snaps)
	if err != nil {
		return nil, 0, fmt.Errorf("rebuild: %w", err)
	}
	err = jetlog.Tail(ctx, js, jetlog.StreamAgg, last+1, false, func(e jetlog.Entry) error {
		if err := events.EachBatch(e.Data, func(b *events.Batch) error { return st.Replay(*b) }); err != nil {
			return fmt.Errorf("aggregate log %d: %w", e.Seq, err)
		}
		last = e.Seq
		return nil
	})
	if err != nil {
		closeAccepted(st)
		return nil, 0, fmt.Errorf("rebuild: %w", err)
	}
	return st, last, nil
}

// ErrInputBehind is returned when the input log ends before the last input
// the aggregate log names: inputs were lost (an OS crash inside the fsync
// interval, or an older backup of the input log). New inputs would reuse
// sequences the fold has already passed and be skipped, so ferry stops.
var ErrInputBehind = errors.New("input log is behind the aggregate log")

func inputsReach(ctx context.Context, js jetstream.JetStream, lastIn uint64) error {
	st, err := js.Stream(ctx, jetlog.StreamIn)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.LastSeq < lastIn {
		return fmt.Errorf("%w: it ends at %d, the aggregate log has applied input %d", ErrInputBehind, info.State.LastSeq, lastIn)
	}
	return nil
}

// messageID is the message id of an aggregate-log message whose last
// batch is that of input in: "batch/<in>", as docs/events.md documents
// it, since the appends of a deposed writer are recognised by it.
func messageID(in uint64) string { return "batch/" + strconv.FormatUint(in, 10) }

// A message groups the batches of inputs that were waiting together, up to
// these bounds: one append and one delivery to each reader then serve many
// inputs under load, while an input that arrives alone is appended at once,
// alone. A batch larger than maxGroupBytes is a message of its own.
const (
	maxGroupBatches = 256
	maxGroupBytes   = 64 << 10
)

// group is the aggregate-log message being built. Its buffer is reused
// from message to message; an append sends a copy of exactly its size (an
// async publish may resend the data it was given).
type group struct {
	msg     []byte
	batches int
	lastIn  uint64
	deals   bool
}

// fits reports whether a batch of n encoded bytes may join g.
func (g *group) fits(n int) bool {
	return g.batches == 0 || (g.batches < maxGroupBatches && len(g.msg)+1+n <= maxGroupBytes)
}

func (g *group) add(in uint64, encoded []byte, deals bool) {
	g.msg = events.AppendBatch(g.msg, encoded)
	g.batches++
	g.lastIn = in
	g.deals = g.deals || deals
}

func (g *group) reset() { *g = group{msg: g.msg[:0]} }

func makesDeals(b *events.Batch) bool {
	for _, d := range b.Decisions {
		if d.Type == events.DecAggDeals {
			return true
		}
	}
	return false
}

// apply reads inputs after st.LastIn and appends their batches. Each
// append expects the last sequence of the log to be that of the message
// before it, and is sent only once that message is stored: with one
// append in flight the expectation names the message before it exactly,
// while pipelined appends would let a later one land after a failed one
// once a foreign message filled the failed one's slot, silently dropping a
// batch. (The message id of the message before is not expected as well:
// a replica that caught up after a restart does not remember the last
// message id, fails that check when applying the next append, and stops
// applying the log; see docs/architecture.md, One writer.)
//
// Inputs already waiting, and those arriving while an append is in flight,
// are applied together and their batches appended as one message (see
// group): under a burst the messages grow instead of the appends in
// flight. A batch that makes deals is always a message of its own: the
// receipter follows those messages alone and resumes within one by the
// position of a receipt in its aggregate.
func (r *Runner) apply(ctx context.Context, l *lease, st *State, aggSeq uint64) error {
	// The append in flight ends with apply, so that none is sent after
	// the runner steps down and releases the lease.
	ctx, cancel := context.WithCancel(ctx)
	var pending *appending // the append in flight
	defer func() {
		cancel()
		if pending != nil {
			<-pending.done
		}
	}()
	inputs := make(chan jetlog.Entry, 1024)
	readErr := make(chan error, 1)
	go func() {
		readErr <- jetlog.Tail(ctx, r.js, jetlog.StreamIn, st.LastIn()+1, true, func(e jetlog.Entry) error {
			select {
			case inputs <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	var (
		g       group
		scratch []byte // the batch being encoded
	)
	// stored is where an append is known stored: the one place.
	stored := func() {
		pending = nil
		r.snap.stored(aggSeq)
		r.publishStatus(st, aggSeq)
	}
	// settle waits for the append in flight, if any.
	settle := func() error {
		if pending == nil {
			return nil
		}
		if err := waitAck(pending); err != nil {
			pending = nil
			return err
		}
		stored()
		return nil
	}
	// flush appends g, if it holds a batch, after the message before it.
	flush := func() error {
		if g.batches == 0 {
			return nil
		}
		if err := settle(); err != nil {
			return err
		}
		pending = r.append(ctx, l, g, aggSeq)
		aggSeq++
		g.reset()
		return nil
	}
	// take applies one input and adds its batch to g, flushing as the
	// bounds and the deals rule say.
	take := func(e jetlog.Entry) error {
		start := time.Now()
		b := st.ApplyInput(Input{Seq: e.Seq, Data: e.Data, Stored: e.Time})
		if r.cfg.OnInput != nil {
			r.cfg.OnInput(r.inputType(e), e.Time, b)
		}
		if len(b.Decisions) == 0 {
			return nil
		}
		var err error
		if scratch, err = events.EncodeBatch(scratch[:0], &b); err != nil {
			return fmt.Errorf("encode batch of input %d: %w", e.Seq, err)
		}
		if len(scratch) > maxMessageBytes(r.js) {
			// The fold bounds every batch well below the limit, so this
			// is a bug; the input is refused on the record rather than
			// left to stop the log for good (see refuseBatch).
			if err := flush(); err != nil {
				return err
			}
			if err := settle(); err != nil {
				return err
			}
			return r.refuseBatch(ctx, l, st, e.Seq, len(scratch), aggSeq)
		}
		deals := makesDeals(&b)
		if deals || !g.fits(len(scratch)) {
			if err := flush(); err != nil {
				return err
			}
		}
		g.add(b.In, scratch, deals)
		// A snapshot position ends its message: the state is now that of
		// the log up to it.
		due := r.snap.due(b.In)
		if due {
			if err := r.snap.take(st, aggSeq+1, g.msg); err != nil {
				return err
			}
		}
		if deals || due {
			if err := flush(); err != nil {
				return err
			}
		}
		if r.cfg.OnBatch != nil {
			r.cfg.OnBatch(b, time.Since(start))
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return ctxerr.NilIfDone(ctx, err)
		case err := <-doneChan(pending):
			if err != nil {
				pending = nil
				return err
			}
			stored()
			// Append what was grouped while this append was in flight.
			if err := flush(); err != nil {
				return err
			}
		case e := <-inputs:
			if err := take(e); err != nil {
				return err
			}
			// Take what else is waiting, then append it unless an append
			// is in flight: then it goes when that one is stored.
			for more := true; more; {
				select {
				case e := <-inputs:
					if err := take(e); err != nil {
						return err
					}
				default:
					more = false
				}
			}
			if pending == nil {
				if err := flush(); err != nil {
					return err
				}
			}
			// Inputs that decided nothing append nothing, yet they are
			// applied: with no append in flight the status says so now
			// (otherwise the next stored append does).
			if pending == nil {
				r.publishStatus(st, aggSeq)
			}
		}
	}
}

// maxMessageBytes is the largest message the aggregate log takes: the
// connection's message limit, less room for the headers. A batch larger
// than it cannot be stored even alone.
func maxMessageBytes(js jetstream.JetStream) int {
	return int(js.Conn().MaxPayload()) - 1024
}

// errRefused is the cause of the rebuild after refuseBatch.
var errRefused = errors.New("an input's decisions were too large for the aggregate log and were refused")

// refuseBatch appends, in place of the batch of input in (n bytes encoded,
// too large to store), a batch that ignores the input with the reason,
// and returns ErrDeposed: the state evolved by the refused batch, so the
// aggregator steps down and rebuilds from what the log holds, then goes
// on after the input.
func (r *Runner) refuseBatch(ctx context.Context, l *lease, st *State, in uint64, n int, aggSeq uint64) error {
	reason := fmt.Sprintf("refused: its decisions encode to %d bytes, more than the aggregate log's %d-byte message limit", n, maxMessageBytes(r.js))
	b := events.Batch{In: in, Now: st.now, Decisions: []events.Decision{{Type: events.DecInputIgnored, Reason: reason}}}
	data, err := events.EncodeBatch(nil, &b)
	if err != nil {
		return err
	}
	r.cfg.Log.Error("aggregator refused an input whose decisions do not fit the aggregate log", "input", in, "bytes", n)
	if err := waitAck(r.append(ctx, l, group{msg: data, batches: 1, lastIn: in}, aggSeq)); err != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrDeposed, errRefused)
}

// publishStatus is called whenever the log is known to hold this
// runner's messages up to aggSeq: after a rebuild and after each
// acknowledged append.
func (r *Runner) publishStatus(st *State, aggSeq uint64) {
	r.mu.Lock()
	r.counts = st.Counts()
	r.aggSeq = aggSeq
	r.lastIn = st.LastIn()
	r.mu.Unlock()
}

// tick publishes the time into the input log while leading. Its message id
// is the tick time truncated to the period, so two leaders for a moment
// publish one tick.
func (r *Runner) tick(ctx context.Context) {
	pub := jetlog.NewPublisher(r.js, r.cfg.Subjects)
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ev := &events.Tick{Time: now.UTC().Truncate(r.cfg.Tick)}
			if _, err := pub.Publish(ctx, ev); err != nil && ctx.Err() == nil {
				r.cfg.Log.Warn("tick not published", "err", err)
			}
		}
	}
}

// inputType is an input's type as its subject names it (<prefix>in.<type>).
func (r *Runner) inputType(e jetlog.Entry) string {
	if e.Msg == nil {
		return "unknown"
	}
	typ, ok := strings.CutPrefix(e.Msg.Subject(), r.cfg.Subjects.Input(""))
	if !ok || typ == "" {
		return "unknown"
	}
	return typ
}
