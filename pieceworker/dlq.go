package pieceworker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is piece work that ran out of attempts.
type DeadLetter struct {
	workqueue.DeadLetter
	Event events.CarReplicated
}

// DeadLetters lists the dead letters, of one CAR when car is set.
func DeadLetters(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, car string) ([]DeadLetter, error) {
	letters, err := workqueue.DeadLetters(ctx, js, Queue(sub), car)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, len(letters))
	for i, l := range letters {
		out[i].DeadLetter = l
		if err := json.Unmarshal(l.Data, &out[i].Event); err != nil {
			return nil, fmt.Errorf("dead letter %d: %w", l.Seq, err)
		}
	}
	return out, nil
}

// Replay puts each dead letter's car.replicated into the input log again —
// its rejection made the CAR unknown to the fold, so it is accepted and
// queued anew — then deletes the dead letter.
func Replay(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, letters []DeadLetter) error {
	items := make([]workqueue.DeadLetter, len(letters))
	for i, l := range letters {
		items[i] = l.DeadLetter
	}
	return workqueue.Replay(ctx, js, Queue(sub), items, Resubmit(js, sub))
}

// Resubmit is Replay's resubmission of one letter, for workqueue.Replay.
func Resubmit(js jetstream.JetStream, sub jetlog.Subjects) func(context.Context, workqueue.DeadLetter) error {
	pub := jetlog.NewPublisher(js, sub)
	return func(ctx context.Context, l workqueue.DeadLetter) error {
		var ev events.CarReplicated
		if err := json.Unmarshal(l.Data, &ev); err != nil {
			return err
		}
		msg, err := pub.Msg(&ev)
		if err != nil {
			return err
		}
		// A new message id: the first publish of this CAR may still be in
		// the duplicate window.
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/replay/%d", ev.MsgID(), l.Seq))
		_, err = js.PublishMsg(ctx, msg)
		return err
	}
}
