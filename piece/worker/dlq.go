package worker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is piece work that ran out of attempts.
type DeadLetter struct {
	Seq        uint64
	Event      events.CarReplicated
	Reason     string
	Deliveries string
	FailedAt   string
}

// DeadLetters lists the dead letters, of one CAR when car is set.
func DeadLetters(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, car string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := jetlog.Tail(ctx, js, jetlog.StreamDLQ, 1, false, func(e jetlog.Entry) error {
		if car != "" && e.Msg.Subject() != sub.DeadLetter(car) {
			return nil
		}
		l := DeadLetter{Seq: e.Seq}
		if err := json.Unmarshal(e.Data, &l.Event); err != nil {
			return fmt.Errorf("dead letter %d: %w", e.Seq, err)
		}
		h := e.Msg.Headers()
		l.Reason, l.Deliveries, l.FailedAt = h.Get(HeaderReason), h.Get(HeaderDeliveries), h.Get(HeaderFailedAt)
		out = append(out, l)
		return nil
	})
	return out, err
}

// Replay puts each dead letter's car.replicated into the input log again —
// its rejection made the CAR unknown to the fold, so it is accepted and
// queued anew — then deletes the dead letter.
func Replay(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, letters []DeadLetter) error {
	st, err := js.Stream(ctx, jetlog.StreamDLQ)
	if err != nil {
		return err
	}
	pub := jetlog.NewPublisher(js, sub)
	for _, l := range letters {
		msg, err := pub.Msg(&l.Event)
		if err != nil {
			return err
		}
		// A new message id: the first publish of this CAR may still be in
		// the duplicate window.
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/replay/%d", l.Event.MsgID(), l.Seq))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("replay %s: %w", l.Event.Car, err)
		}
		if err := st.DeleteMsg(ctx, l.Seq); err != nil {
			return fmt.Errorf("delete dead letter %d: %w", l.Seq, err)
		}
	}
	return nil
}
