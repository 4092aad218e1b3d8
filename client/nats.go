package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NewPublisher returns a publisher of input events on js under ferry's
// subject prefix (jetlog.DefaultPrefix unless configured otherwise); see
// jetlog.Publisher.
func NewPublisher(js jetstream.JetStream, prefix string) *jetlog.Publisher {
	if prefix == "" {
		prefix = jetlog.DefaultPrefix
	}
	return jetlog.NewPublisher(js, jetlog.Subjects{Prefix: prefix})
}

// Replay reads the aggregate log from sequence from up to its current end
// and calls fn with each batch of decisions, in order: the whole history of
// where every CAR went, for rebuilding a service's own state. seq is the
// batch's message in the log; one message may hold the batches of several
// inputs, so resume from the last seq fn saw whole, skipping batches whose
// In fn has already seen.
//
// The end is the log's last sequence as the stream's leader holds it when
// Replay starts; a read whose consumer sits on a replica that stays behind
// it fails with a *jetlog.BehindError (errors.Is jetlog.ErrBehind) saying
// how far it got, after fn has seen that far.
func Replay(ctx context.Context, js jetstream.JetStream, from uint64, fn func(seq uint64, b events.Batch) error) error {
	return jetlog.Tail(ctx, js, jetlog.StreamAgg, from, false, func(e jetlog.Entry) error {
		err := events.EachBatch(e.Data, func(b *events.Batch) error { return fn(e.Seq, *b) })
		if err != nil {
			return fmt.Errorf("aggregate log %d: %w", e.Seq, err)
		}
		return nil
	})
}

// From says where a receipt subscription starts: at a stream sequence, or
// where the named durable consumer stopped (created at the first receipt
// if new). A durable subscription acknowledges each receipt after handler
// returns nil, so a restart resumes after the last one handled.
type From struct {
	Seq     uint64
	Durable string
	// Car, when set, limits the subscription to one CAR's receipts.
	Car string
	// Once stops after the receipts present at the start (the last one
	// as the stream's leader holds it), instead of following new ones. A
	// consumer on a replica behind the stream that delivers nothing for
	// jetlog.ReadStall meanwhile ends it with a *jetlog.BehindError.
	Once bool
	// Subjects are ferry's subjects; the zero value means the default
	// "ferry." prefix.
	Subjects jetlog.Subjects
}

// SubscribeReceipts calls handler for each receipt from the given position
// on, until ctx ends or handler fails. A handler error is returned; with a
// durable consumer, that receipt is delivered again next time.
func SubscribeReceipts(ctx context.Context, js jetstream.JetStream, from From, handler func(seq uint64, r wire.Receipt) error) error {
	subject := receiptSubject(from)
	cons, err := receiptConsumer(ctx, js, from, subject)
	if err != nil {
		return err
	}
	// Once ends at the last receipt as the stream's leader holds it: the
	// consumer's "nothing pending" speaks for the replica it sits on.
	var (
		end  *jetlog.End
		wait []jetstream.NextOpt
		n    int
		next = max(from.Seq, 1) // every receipt before it was delivered
	)
	if from.Once {
		if end, err = jetlog.NewEnd(ctx, js, jetlog.StreamReceipts, subject); err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		next = max(next, info.Delivered.Stream+1)
		if info.NumPending == 0 {
			if done, err := end.Reached(ctx, next); err != nil || done {
				return err
			}
		}
		wait = append(wait, jetstream.NextMaxWait(jetlog.ReadStall()))
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next(wait...)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			if from.Once && errors.Is(err, nats.ErrTimeout) {
				return end.Stalled(ctx, n, next)
			}
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		var r wire.Receipt
		if err := json.Unmarshal(msg.Data(), &r); err != nil {
			return fmt.Errorf("receipt %d: %w", meta.Sequence.Stream, err)
		}
		if err := handler(meta.Sequence.Stream, r); err != nil {
			_ = msg.Nak()
			return err
		}
		if from.Durable != "" {
			if err := msg.DoubleAck(ctx); err != nil {
				return fmt.Errorf("ack receipt %d: %w", meta.Sequence.Stream, err)
			}
		}
		n, next = n+1, meta.Sequence.Stream+1
		if from.Once {
			if done, err := end.After(ctx, meta.Sequence.Stream, meta.NumPending); err != nil || done {
				return err
			}
		}
	}
}

// receiptSubject is the subject of the receipts a subscription reads.
func receiptSubject(from From) string {
	sub := from.Subjects
	if sub.Prefix == "" {
		sub = jetlog.DefaultSubjects
	}
	if from.Car != "" {
		return sub.Receipt(from.Car)
	}
	return sub.Receipts()
}

func receiptConsumer(ctx context.Context, js jetstream.JetStream, from From, subject string) (jetstream.Consumer, error) {
	deliver, start := jetstream.DeliverAllPolicy, uint64(0)
	if from.Seq > 1 {
		deliver, start = jetstream.DeliverByStartSequencePolicy, from.Seq
	}
	if from.Durable == "" {
		return js.OrderedConsumer(ctx, jetlog.StreamReceipts, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{subject}, DeliverPolicy: deliver, OptStartSeq: start})
	}
	return js.CreateOrUpdateConsumer(ctx, jetlog.StreamReceipts, jetstream.ConsumerConfig{
		Durable: from.Durable, FilterSubject: subject, DeliverPolicy: deliver, OptStartSeq: start,
		AckPolicy: jetstream.AckExplicitPolicy, Description: "ferry receipts subscriber"})
}
