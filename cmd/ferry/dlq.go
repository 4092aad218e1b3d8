package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/packworker"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// deadQueue is a work queue whose dead letters ferry dlq handles.
type deadQueue struct {
	name     string
	queue    func(jetlog.Subjects) workqueue.Queue
	resubmit func(jetstream.JetStream, jetlog.Subjects) func(context.Context, workqueue.DeadLetter) error
}

// deadQueues are the work queues with dead letters: piece work (replay
// publishes the CAR's car.replicated again: its rejection made it unknown
// to the fold), fetch work (replay queues the CID's fetch again) and pack
// work (replay queues the CAR job again).
var deadQueues = []deadQueue{
	{"piece", pieceworker.Queue, pieceworker.Resubmit},
	{"fetch", fetchworker.Queue, fetchworker.Resubmit},
	{"pack", packworker.Queue, packworker.Resubmit},
}

// runDLQ lists dead-lettered work, replays it (puts the work back where
// it starts, then deletes the letter) or purges it.
func runDLQ(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("dlq", "dlq list | replay | purge [--queue piece|fetch|pack] [--key KEY]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's streams")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	which := fs.String("queue", "", "only this queue: piece (CARs), fetch (pinned CIDs) or pack (CAR jobs of ferry pack --nats)")
	key := fs.String("key", "", "only this item: a CAR CID (piece), a pinned CID (fetch) or <plan id>.<index> (pack)")
	fs.StringVar(key, "car", "", "same as --key")
	auth := natsAuthFlags(fs, natsembed.RoleAdmin)
	if err := parse(fs, args); err != nil {
		return err
	}
	op := fs.Arg(0)
	if fs.NArg() != 1 || (op != "list" && op != "replay" && op != "purge") {
		fs.Usage()
		return fmt.Errorf("%w: dlq list | replay | purge", errUsage)
	}
	var queues []deadQueue
	for _, q := range deadQueues {
		if *which == "" || *which == q.name {
			queues = append(queues, q)
		}
	}
	if len(queues) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: --queue %q: piece, fetch or pack", errUsage, *which)
	}
	nc, js, err := auth.connect(*natsURL, "ferry dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	sub := jetlog.Subjects{Prefix: *prefix}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	if op == "list" {
		fmt.Fprintln(tw, "QUEUE\tSEQ\tKEY\tATTEMPTS\tFAILED AT\tREASON")
	}
	for _, q := range queues {
		letters, err := workqueue.DeadLetters(ctx, js, q.queue(sub), *key)
		if err != nil {
			return err
		}
		switch op {
		case "list":
			for _, l := range letters {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", q.name, l.Seq, l.Key, l.Deliveries, l.FailedAt, l.Reason)
			}
		case "replay":
			if err := workqueue.Replay(ctx, js, q.queue(sub), letters, q.resubmit(js, sub)); err != nil {
				return err
			}
			fmt.Fprintf(tw, "%d %s dead letters replayed\n", len(letters), q.name)
		case "purge":
			if err := workqueue.Purge(ctx, js, q.queue(sub), letters); err != nil {
				return err
			}
			fmt.Fprintf(tw, "%d %s dead letters purged\n", len(letters), q.name)
		}
	}
	return tw.Flush()
}
