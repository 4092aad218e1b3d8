package aggregator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots keeps the aggregator's state snapshots, so that a new leader
// loads the latest one and folds only the batches after it (package
// aggregator/snapshots keeps them in the FERRY_SNAP object store, with the
// runs of the dedupe index). A runner without Snapshots rebuilds from
// sequence 1 with the dedupe set in the heap.
//
// A snapshot is a pure function of the aggregate log up to its message:
// the runner takes one at the message whose last batch's input crosses a
// multiple of RunnerConfig.SnapshotEvery (SnapshotDue), ending the message
// there, and encodes the state as it is after that batch, which is the
// state a replay of the log up to that message gives.
type Snapshots interface {
	// Empty is the state of an empty log under cfg, with a dedupe set
	// Freeze can checkpoint.
	Empty(cfg events.Settings) (*State, error)
	// Latest returns the state as of the latest snapshot usable for the
	// aggregate log whose last sequence is end, and the sequence of the
	// message it follows; a nil state when none is usable (it logs why it
	// passed one over: newer than the log, another log's, other settings).
	Latest(ctx context.Context, cfg events.Settings, end uint64) (*State, uint64, error)
	// Freeze is called in the fold goroutine at a snapshot position,
	// before any later input is applied: it freezes the changes of st's
	// dedupe set so far (cheaply) and returns what writes them later and
	// returns the dedupe set's manifest. Later changes do not reach it.
	Freeze(st *State) (persist func(context.Context) ([]byte, error), err error)
	// Store stores s (its dedupe set persisted: s.Seen) as the latest
	// snapshot and drops what it supersedes. The runner calls it from one
	// goroutine, in order, only for messages the log has stored.
	Store(ctx context.Context, s Snapshot) error
	// Prefetch brings the latest snapshot's dedupe runs into the local
	// cache: what a standby does so that taking over reads no runs.
	Prefetch(ctx context.Context) error
}

// Snapshot is one snapshot of the state.
type Snapshot struct {
	// Seq is the aggregate-log message the snapshot follows; LastIn is
	// its last batch's input.
	Seq, LastIn uint64
	// Digest is the SHA-256 of that message's data: a snapshot is used
	// only while the log holds that very message at Seq (a restored older
	// log, or another log, does not).
	Digest [32]byte
	// State is the state without its dedupe set (State.MarshalSnapshot).
	State []byte
	// Seen is the dedupe set's manifest as of the snapshot.
	Seen []byte

	persist func(context.Context) ([]byte, error)
}

// DefaultSnapshotEvery is the number of inputs between two snapshots a
// runner takes by default. A takeover replays at most this many inputs'
// batches after the snapshot it loads; each snapshot stores the state
// without its dedupe set (proportional to open work) and the dedupe
// index's runs written since the one before.
const DefaultSnapshotEvery = 100_000

// SnapshotDue says whether the batch of input in, whose batch before it
// in the log was that of input prev (0: none), is a snapshot position:
// it crosses a multiple of every. It reads nothing but the log, so every
// leader of a log takes its snapshots at the same batches.
func SnapshotDue(prev, in, every uint64) bool {
	return every > 0 && in/every > prev/every
}

// snapshotter is the runner's side of Snapshots while it leads: the fold
// goroutine takes snapshots (take), hands over the one whose message is
// stored (stored), and one background goroutine (run) persists them in
// order, so that the fold does not wait for the object store.
type snapshotter struct {
	snaps Snapshots
	every uint64
	log   *slog.Logger

	prev    uint64      // the input of the last batch the fold made
	waiting []*Snapshot // taken, their messages not yet acknowledged, in order

	mu    sync.Mutex
	queue []*Snapshot // acknowledged, not yet persisted
	wake  chan struct{}
}

func newSnapshotter(snaps Snapshots, every uint64, lastIn uint64, log *slog.Logger) *snapshotter {
	if snaps == nil {
		return nil
	}
	return &snapshotter{snaps: snaps, every: cmp.Or(every, DefaultSnapshotEvery), log: log, prev: lastIn, wake: make(chan struct{}, 1)}
}

// due records that the fold made the batch of input in and says whether
// the message must end with it for a snapshot.
func (s *snapshotter) due(in uint64) bool {
	if s == nil {
		return false
	}
	d := SnapshotDue(s.prev, in, s.every)
	s.prev = in
	return d
}

// take snapshots st, which is the state after the last batch of msg, the
// message about to be appended at seq.
func (s *snapshotter) take(st *State, seq uint64, msg []byte) error {
	persist, err := s.snaps.Freeze(st)
	if err != nil {
		return err
	}
	s.waiting = append(s.waiting, &Snapshot{Seq: seq, LastIn: st.LastIn(), Digest: sha256.Sum256(msg), State: st.MarshalSnapshot(nil), persist: persist})
	return nil
}

// stored tells the snapshotter the log holds its messages up to seq.
func (s *snapshotter) stored(seq uint64) {
	if s == nil {
		return
	}
	n := 0
	for n < len(s.waiting) && s.waiting[n].Seq <= seq {
		n++
	}
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.queue = append(s.queue, s.waiting[:n]...)
	s.mu.Unlock()
	s.waiting = slices.Delete(s.waiting, 0, n)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run persists the acknowledged snapshots in order until ctx ends: every
// one's dedupe changes (each builds on the one before), and of those
// waiting together only the last one's state, which supersedes the
// others.
func (s *snapshotter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		todo := s.queue
		s.queue = nil
		s.mu.Unlock()
		for i, snap := range todo {
			m, err := retry(ctx, s.log, "persist the dedupe index", snap.persist)
			if err != nil {
				return // ctx ended
			}
			snap.Seen = m
			if i < len(todo)-1 {
				continue
			}
			start := time.Now()
			if err := s.snaps.Store(ctx, *snap); err != nil {
				if ctx.Err() == nil {
					s.log.Warn("aggregator snapshot not stored; the next one will be", "aggregateLogSeq", snap.Seq, "err", err)
				}
				continue
			}
			s.log.Info("aggregator snapshot stored", "aggregateLogSeq", snap.Seq, "lastInput", snap.LastIn,
				"stateBytes", len(snap.State), "took", time.Since(start))
		}
	}
}

// retry calls fn until it succeeds or ctx ends, backing off from 1 s to
// 30 s: the dedupe changes of one snapshot must be persisted before those
// of the next.
func retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) ([]byte, error)) ([]byte, error) {
	wait := time.Second
	for {
		out, err := fn(ctx)
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.Warn("aggregator snapshot: "+what+" failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// startingState is the state a rebuild evolves from, with the sequence
// of the last message it holds: the latest usable snapshot's, or the
// empty state at 0.
func startingState(ctx context.Context, js jetstream.JetStream, cfg events.Settings, snaps Snapshots) (*State, uint64, error) {
	if snaps == nil {
		return New(cfg), 0, nil
	}
	end, err := jetlog.LastSeq(ctx, js, jetlog.StreamAgg, "")
	if err != nil {
		return nil, 0, err
	}
	st, seq, err := snaps.Latest(ctx, cfg, end)
	if err != nil || st != nil {
		return st, seq, err
	}
	st, err = snaps.Empty(cfg)
	return st, 0, err
}

// closeAccepted closes st's dedupe set when it holds files (a seen
// index); nil is a no-op.
func closeAccepted(st *State) {
	if st == nil {
		return
	}
	if c, ok := st.Accepted().(io.Closer); ok {
		c.Close()
	}
}

// PrefetchEvery is how often a standby looks for a newer snapshot to
// prefetch.
const PrefetchEvery = 5 * time.Second

// prefetchWhileStandby starts prefetching the latest snapshot's dedupe
// runs every PrefetchEvery while the runner does not lead; the function
// it returns stops it and waits for it.
func (r *Runner) prefetchWhileStandby(ctx context.Context) (stop func()) {
	if r.cfg.Snapshots == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(PrefetchEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !r.cache.TryLock() {
				continue // leading
			}
			err := r.cfg.Snapshots.Prefetch(ctx)
			r.cache.Unlock()
			if err != nil && ctx.Err() == nil {
				r.cfg.Log.Warn("aggregator standby: snapshot prefetch failed", "err", err)
			}
		}
	}()
	return func() { cancel(); <-done }
}
