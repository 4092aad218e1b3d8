package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pieceworker"
)

// runDLQ lists dead-lettered piece work, or replays it: the CAR's
// car.replicated goes into the input log again (its rejection made it
// unknown to the fold), and the dead letter is deleted.
func runDLQ(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("dlq", "dlq list | dlq replay [--car CID]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's streams")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	car := fs.String("car", "", "only this CAR")
	auth := natsAuthFlags(fs, natsembed.RoleAdmin)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "list" && fs.Arg(0) != "replay") {
		fs.Usage()
		return fmt.Errorf("%w: dlq list | dlq replay", errUsage)
	}
	nc, js, err := auth.connect(*natsURL, "ferry dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	sub := jetlog.Subjects{Prefix: *prefix}
	letters, err := pieceworker.DeadLetters(ctx, js, sub, *car)
	if err != nil {
		return err
	}
	if fs.Arg(0) == "list" {
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tCAR\tATTEMPTS\tFAILED AT\tREASON")
		for _, l := range letters {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", l.Seq, l.Event.Car, l.Deliveries, l.FailedAt, l.Reason)
		}
		return tw.Flush()
	}
	if err := pieceworker.Replay(ctx, js, sub, letters); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d dead letters replayed\n", len(letters))
	return nil
}
