// Package packworker distributes a pack's CAR jobs (package pack) over
// JetStream: `ferry pack --nats` hands its jobs to a Coordinator, which
// queues them on the pack work queue (workqueue) and waits for their
// results, and pack workers on any number of machines build them with
// pack.BuildCAR.
//
// # Rules
//
//   - The work queue's rules hold (see workqueue): one item per job, keyed
//     <plan id>.<index>, one worker at a time on it, InProgress heartbeats
//     while it builds, backoff by attempt, a dead letter after the last.
//     Claims last DefaultAckWait between heartbeats, so a dead worker's
//     job goes to another within seconds.
//   - A job's parts and its Result's files stay on the file system the
//     pack and its workers share (pack.LoadParts, pack.SaveResult): the
//     queue carries the job without parts and FERRY_PACK_DONE the Result
//     without files, so no message grows with a CAR's file count.
//   - A worker reads the tree and writes the CAR at the paths the job
//     names, rewritten by its SourceMap; a tree or output directory it
//     does not have at all is an error (retried, then dead-lettered),
//     not a CAR of skipped files. Every failure ends in a dead letter, never in a
//     dropped item, since only a dead letter ends the pack waiting.
//   - The result is saved and published before the item is acknowledged,
//     so a crash in between repeats the build, never loses it; a build is
//     deterministic, so a repeat makes the same CAR.
//   - A Coordinator reads its plan's results from the start of
//     FERRY_PACK_DONE before it queues anything, so a pack restarted
//     after results were published builds none of those jobs again; it
//     takes one result per pending job and ignores the rest, and a job
//     dead-lettered while it waits fails the pack with the letter's
//     reason.
//   - A job names paths a worker reads and writes, so only ferry's own
//     NATS users may queue one: the publish role cannot reach these
//     streams.
package packworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pack"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultAckWait is how long a pack worker may stay silent before its job
// goes to another; workers heartbeat at a third of it. A live worker
// heartbeats whatever its build's pace, so only a dead or cut-off worker
// loses its job, and the job moves within this long of its death.
const DefaultAckWait = 15 * time.Second

// Queue is the pack work queue under sub: FERRY_PACK, one item per job on
// <prefix>work.pack.<plan id>.<index>, dead letters on FERRY_PACK_DLQ.
func Queue(sub jetlog.Subjects) workqueue.Queue {
	sub = subjects(sub)
	return workqueue.Queue{
		Name: "pack work", Stream: jetlog.StreamPack, Subject: sub.PackWork(""), Consumer: jetlog.PackConsumer,
		DeadStream: jetlog.StreamPackDLQ, DeadSubject: sub.PackDeadLetter(""), Attempts: "pack",
	}
}

func subjects(sub jetlog.Subjects) jetlog.Subjects {
	if sub.Prefix == "" {
		return jetlog.DefaultSubjects
	}
	return sub
}

// Key is the work item key of a plan's job.
func Key(plan string, index int) string { return plan + "." + strconv.Itoa(index) }

// Config of a pool of pack workers.
type Config struct {
	Subjects jetlog.Subjects
	// Workers is the number of CARs built at once (default 1).
	Workers int
	// SourceMap rewrites the paths a job names to this machine's.
	SourceMap SourceMap
	// MaxDeliver is how often a job is tried before it is dead (default
	// 5).
	MaxDeliver int
	// Backoff is the wait before each retry, by attempt; the last repeats
	// (workqueue's default if empty).
	Backoff []time.Duration
	// AckWait is how long a worker may stay silent before its job goes to
	// another (DefaultAckWait if zero).
	AckWait time.Duration
	Log     *slog.Logger
}

// Pool is a running set of pack workers.
type Pool struct {
	cfg Config
	js  jetstream.JetStream
	wq  *workqueue.Workers
	// build is pack.BuildCAR; tests wrap it.
	build func(context.Context, pack.Job, *pack.Progress) (*pack.Result, error)
}

// New returns a pool on js.
func New(js jetstream.JetStream, cfg Config) *Pool {
	cfg.Subjects = subjects(cfg.Subjects)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	p := &Pool{cfg: cfg, js: js, build: pack.BuildCAR}
	p.wq = workqueue.New(js, Queue(cfg.Subjects), workqueue.Config{
		Workers: cfg.Workers, MaxDeliver: cfg.MaxDeliver, Backoff: cfg.Backoff, AckWait: cfg.AckWait, Log: cfg.Log,
	}, p.work)
	return p
}

// Run creates the pack streams if they are missing and works until ctx
// ends.
func (p *Pool) Run(ctx context.Context) error {
	if err := jetlog.EnsurePackStreams(ctx, p.js, p.cfg.Subjects); err != nil {
		return err
	}
	return p.wq.Run(ctx)
}

// work builds one job's CAR and publishes its result.
func (p *Pool) work(ctx context.Context, item workqueue.Job) error {
	// An unreadable job is an error, not a workqueue.Drop: its dead
	// letter ends the pack that waits for it, a dropped item would not.
	var job pack.Job
	if err := json.Unmarshal(item.Data, &job); err != nil {
		return fmt.Errorf("unreadable pack job: %w", err)
	}
	if job.Plan == "" || Key(job.Plan, job.Index) != item.Key {
		return fmt.Errorf("unreadable pack job: job %s.%d on item %q", job.Plan, job.Index, item.Key)
	}
	log := p.cfg.Log.With("job", item.Key, "delivery", item.Attempt)
	source, out := job.Source, job.Out
	job.Source, job.Out = p.cfg.SourceMap.Apply(source), p.cfg.SourceMap.Apply(out)
	if err := here("tree", job.Source, source); err != nil {
		return err
	}
	if err := here("pack output", filepath.Dir(job.CARFile()), filepath.Join(out, pack.StateDir, "tmp")); err != nil {
		return err
	}
	if err := pack.LoadParts(&job); err != nil {
		return err
	}
	start := time.Now()
	r, err := p.build(ctx, job, nil)
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // stopping: the job goes to another worker
	case err != nil:
		return fmt.Errorf("CAR %d: %w", job.Index, err)
	}
	if err := pack.SaveResult(job, r); err != nil {
		return err
	}
	if err := p.publish(ctx, item, r); err != nil {
		return workqueue.RetrySoon(fmt.Errorf("pack result not published: %w", err))
	}
	log.Info("CAR built", "car", r.Car, "size", r.Size, "piece", r.Piece, "files", len(r.Files), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// here says what is wrong when dir, the job's path named as asked (the
// pack's own), is not a directory on this machine.
func here(what, dir, asked string) error {
	fi, err := os.Stat(dir)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		err = errors.New("not a directory")
	}
	name := dir
	if dir != asked {
		name = fmt.Sprintf("%s (the pack's %s)", dir, asked)
	}
	return fmt.Errorf("the %s %s is not on this machine (%v): mount it at that path or map it with --source-map", what, name, err)
}

// publish sends r, without its files, as the job's result. The message id
// is the delivery's: a publish retried within one delivery is stored
// once, while a later build of the job is a result of its own (a pack
// that found an earlier one's CAR gone waits for it).
func (p *Pool) publish(ctx context.Context, item workqueue.Job, r *pack.Result) error {
	brief := *r
	brief.Files, brief.Tree = nil, nil
	data, err := json.Marshal(&brief)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(p.cfg.Subjects.PackDone(item.Key))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/%d/%d", item.Key, item.Seq, item.Attempt))
	_, err = p.js.PublishMsg(ctx, msg)
	return err
}

// SourceMap rewrites the paths a job names (its tree and its pack's
// output directory) to where this machine has them: each mapping replaces
// a leading directory, the longest that matches first.
type SourceMap []Mapping

// Mapping replaces the directory From, at the start of a path, with To.
type Mapping struct{ From, To string }

// ParseSourceMap reads FROM=TO specs (absolute paths).
func ParseSourceMap(specs []string) (SourceMap, error) {
	var m SourceMap
	seen := map[string]bool{}
	for _, s := range specs {
		from, to, ok := strings.Cut(s, "=")
		if !ok || !filepath.IsAbs(from) || !filepath.IsAbs(to) {
			return nil, fmt.Errorf("source map %q: want FROM=TO, both absolute paths", s)
		}
		from, to = filepath.Clean(from), filepath.Clean(to)
		if seen[from] {
			return nil, fmt.Errorf("source map %q: %s is mapped twice", s, from)
		}
		seen[from] = true
		m = append(m, Mapping{From: from, To: to})
	}
	sort.SliceStable(m, func(i, j int) bool { return len(m[i].From) > len(m[j].From) })
	return m, nil
}

// Apply rewrites path by the first mapping whose From is path or one of
// its parent directories; a path no mapping matches is returned as is.
func (m SourceMap) Apply(path string) string {
	for _, mp := range m {
		if path == mp.From {
			return mp.To
		}
		dir := mp.From
		if !strings.HasSuffix(dir, string(filepath.Separator)) {
			dir += string(filepath.Separator)
		}
		if rest, ok := strings.CutPrefix(path, dir); ok {
			return filepath.Join(mp.To, rest)
		}
	}
	return path
}
