package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Entry is one message of a log: its stream sequence and body.
type Entry struct {
	Seq  uint64
	Data []byte
	// Time is when the stream stored the message.
	Time time.Time
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
	it, err := cons.Messages(PullOpt(stream))
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
		if err := fn(Entry{Seq: seq, Data: msg.Data(), Time: meta.Timestamp, Msg: msg}); err != nil {
			return err
		}
		if !follow && (seq >= last || meta.NumPending == 0) {
			return nil
		}
	}
}

// PullOpt is how a tail of stream pulls. The aggregate log's messages are
// up to 64 KiB (grouped batches), so its pulls are bounded in bytes too:
// 2,048 of them overran the subscription's pending limit, and the ordered
// consumer stalled and reset (a 300,000-CAR log read in 4.3 s instead of
// 0.14). Bytes alone (PullMaxBytes) make nats.go allocate a channel for a
// million messages, 8 MB per tail. The other streams hold small messages
// and pull by count: the byte-bounded form on the input log made nats.go
// report slow consumers (messages dropped, the ordered consumer
// recreated) several times per benchmark run, and none by count.
func PullOpt(stream string) jetstream.PullMessagesOpt {
	if stream == StreamAgg {
		return jetstream.PullMaxMessagesWithBytesLimit(512, 8<<20)
	}
	return jetstream.PullMaxMessages(2048)
}
