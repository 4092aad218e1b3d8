package packworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pack"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// Coordinator is the pack.Builder of `ferry pack --nats`: pack workers
// build the jobs it queues.
type Coordinator struct {
	JS       jetstream.JetStream
	Subjects jetlog.Subjects
	// Progress, if set, counts the files and bytes of each result taken.
	Progress *pack.Progress
	Log      *slog.Logger
}

// Build queues the jobs that have no result yet and calls done with each
// job's result as it arrives, until every job has one; a job that runs
// out of attempts fails it.
func (c *Coordinator) Build(ctx context.Context, jobs []pack.Job, done func(*pack.Result) error) error {
	if len(jobs) == 0 {
		return nil
	}
	sub := subjects(c.Subjects)
	b := &build{c: c, sub: sub, plan: jobs[0].Plan, out: jobs[0].Out, pending: map[int]pack.Job{}, done: done, log: c.Log}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	for _, j := range jobs {
		if j.Plan != b.plan {
			return fmt.Errorf("jobs of two plans, %s and %s, in one build", b.plan, j.Plan)
		}
		b.pending[j.Index] = j
	}
	js := c.JS
	if err := jetlog.EnsurePackStreams(ctx, js, sub); err != nil {
		return err
	}
	// This run queues every job again, those an earlier run saw die too:
	// their dead letters go.
	if err := purge(ctx, js, jetlog.StreamPackDLQ, sub.PackDeadLetter(b.plan+".>")); err != nil {
		return err
	}
	// Results published while no pack waited for them come first, so a
	// job built already is not queued again.
	doneSt, err := js.Stream(ctx, jetlog.StreamPackDone)
	if err != nil {
		return err
	}
	info, err := doneSt.Info(ctx)
	if err != nil {
		return err
	}
	from := info.State.LastSeq + 1
	err = jetlog.TailSubject(ctx, js, jetlog.StreamPackDone, sub.PackDone(b.plan+".>"), 1, false, func(e jetlog.Entry) error {
		from = max(from, e.Seq+1)
		return b.result(e, false)
	})
	if err != nil {
		return err
	}
	q := Queue(sub)
	for _, j := range jobs {
		if _, ok := b.pending[j.Index]; !ok {
			continue
		}
		data, err := json.Marshal(j.Brief())
		if err != nil {
			return err
		}
		if err := workqueue.Enqueue(ctx, js, q, Key(j.Plan, j.Index), data); err != nil {
			return fmt.Errorf("queue CAR %d: %w", j.Index, err)
		}
	}
	if len(b.pending) > 0 {
		b.log.Info("CAR jobs queued for pack workers", "plan", b.plan, "jobs", len(b.pending))
		if err := b.wait(ctx, from); err != nil {
			return err
		}
	}
	// Every result is recorded by the pack now.
	return purge(ctx, js, jetlog.StreamPackDone, sub.PackDone(b.plan+".>"))
}

// build is one Build's state.
type build struct {
	c       *Coordinator
	sub     jetlog.Subjects
	plan    string
	out     string
	pending map[int]pack.Job
	done    func(*pack.Result) error
	log     *slog.Logger
}

// wait takes results from sequence from on, and dead letters, until no
// job is pending.
func (b *build) wait(ctx context.Context, from uint64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type arrival struct {
		e    jetlog.Entry
		dead bool
	}
	in := make(chan arrival)
	var wg sync.WaitGroup
	follow := func(stream, subject string, from uint64, dead bool) {
		wg.Go(func() {
			err := jetlog.TailSubject(ctx, b.c.JS, stream, subject, from, true, func(e jetlog.Entry) error {
				select {
				case in <- arrival{e, dead}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil {
				cancel(err)
			}
		})
	}
	follow(jetlog.StreamPackDone, b.sub.PackDone(b.plan+".>"), from, false)
	follow(jetlog.StreamPackDLQ, b.sub.PackDeadLetter(b.plan+".>"), 1, true)
	defer wg.Wait()
	defer cancel(nil)
	for len(b.pending) > 0 {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case a := <-in:
			var err error
			if a.dead {
				err = b.dead(a.e)
			} else {
				err = b.result(a.e, true)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// index is the job index a message of the plan's is about, from its
// subject after prefix; false for another plan's or a malformed one.
func (b *build) index(subject, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(subject, prefix+b.plan+".")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil
}

// result takes a job's result: the Result the worker saved beside the
// CAR, matching the message. A result found on the stream before any job
// was queued (live false) whose CAR is gone leaves its job to be built
// again; one that arrives later must be there.
func (b *build) result(e jetlog.Entry, live bool) error {
	i, ok := b.index(e.Msg.Subject(), b.sub.PackDone(""))
	job, pending := b.pending[i]
	if !ok {
		return nil
	}
	if !pending {
		// Recorded by an earlier run that stopped before it removed the
		// worker's copy of the result.
		return pack.RemoveResult(pack.Job{Out: b.out, Index: i})
	}
	var brief pack.Result
	if err := json.Unmarshal(e.Data, &brief); err != nil || brief.Index != i {
		b.log.Warn("unreadable pack result ignored", "subject", e.Msg.Subject(), "seq", e.Seq, "err", err)
		return nil
	}
	r, err := pack.LoadResult(job)
	switch {
	case err != nil && !live && errors.Is(err, fs.ErrNotExist):
		b.log.Warn("a CAR built earlier is gone; building it again", "car", i, "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("CAR %d: a pack worker built it, but %w: the workers must write into this --out (a shared file system, or --source-map)", i, err)
	case r.Car != brief.Car:
		// A build of the job that finished later saved its result over
		// this one's; its own message follows.
		b.log.Info("pack result superseded", "car", i, "result", brief.Car, "saved", r.Car)
		return nil
	}
	b.c.Progress.AddBuilt(r)
	if err := b.done(r); err != nil {
		return err
	}
	delete(b.pending, i)
	return pack.RemoveResult(job)
}

// dead fails the build with a pending job's dead letter.
func (b *build) dead(e jetlog.Entry) error {
	i, ok := b.index(e.Msg.Subject(), b.sub.PackDeadLetter(""))
	if _, pending := b.pending[i]; !ok || !pending {
		return nil
	}
	h := e.Msg.Headers()
	return fmt.Errorf("CAR %d: its pack job ran out of attempts (%s): %s (ferry dlq list --queue pack shows it; ferry pack run again retries it)",
		i, h.Get(workqueue.HeaderDeliveries), h.Get(workqueue.HeaderReason))
}

func purge(ctx context.Context, js jetstream.JetStream, stream, subject string) error {
	st, err := js.Stream(ctx, stream)
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(subject))
	}
	if err != nil {
		return fmt.Errorf("purge %s of %s: %w", stream, subject, err)
	}
	return nil
}
