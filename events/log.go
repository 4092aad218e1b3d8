package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Entry is one message of a log: its stream sequence and body.
type Entry struct {
	Seq  uint64
	Data []byte
	Msg  jetstream.Msg
}

// Tail reads stream from sequence from on and calls fn for each message in
// order. With follow it keeps waiting for new messages until ctx ends or fn
// fails; without it returns once the message that was last when Tail started
// has been read. An ordered consumer is used: no state is left on the server.
func Tail(ctx context.Context, js jetstream.JetStream, stream string, from uint64, follow bool, fn func(Entry) error) error {
	return TailSubject(ctx, js, stream, "", from, follow, fn)
}

// TailSubject is Tail over the messages of one subject of the stream (all
// of them when subject is empty); the server skips the others.
func TailSubject(ctx context.Context, js jetstream.JetStream, stream, subject string, from uint64, follow bool, fn func(Entry) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if !follow && (last == 0 || last < from) {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("consumer on %s: %w", stream, err)
	}
	if !follow {
		// Deleted messages (a replayed dead letter) leave LastSeq behind;
		// what is left to read is the consumer's pending count.
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer on %s: %w", stream, err)
		}
		if ci.NumPending == 0 {
			return nil
		}
	}
	// Pulls are bounded in bytes as well as messages: 2,048 aggregate-log
	// messages of 64 KiB overran the subscription's pending limit, and the
	// ordered consumer stalled and reset (a 300,000-CAR log read in 4.3 s
	// instead of 0.14). Bytes alone (PullMaxBytes) let nats.go buffer up to
	// a million messages: an 8 MB channel per tail, kept by followers.
	// Every message ferry writes is far below 8 MiB. With 1,024 messages
	// nats.go reported slow consumers (messages dropped, the ordered
	// consumer recreated) several times per benchmark run; with 2,048,
	// about once in four runs. The ordered consumer resumes at the next
	// sequence, so nothing is lost.
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(2048, 8<<20))
	if err != nil {
		return fmt.Errorf("consume %s: %w", stream, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("read %s: %w", stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		seq := meta.Sequence.Stream
		if err := fn(Entry{Seq: seq, Data: msg.Data(), Msg: msg}); err != nil {
			return err
		}
		if !follow && (seq >= last || meta.NumPending == 0) {
			return nil
		}
	}
}
