package fetchworker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is fetch work that ran out of attempts.
type DeadLetter struct {
	workqueue.DeadLetter
	Item Item
}

// DeadLetters lists the dead letters, of one CID when c is set.
func DeadLetters(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, c string) ([]DeadLetter, error) {
	letters, err := workqueue.DeadLetters(ctx, js, Queue(sub), c)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, len(letters))
	for i, l := range letters {
		out[i].DeadLetter = l
		if err := json.Unmarshal(l.Data, &out[i].Item); err != nil {
			return nil, fmt.Errorf("dead letter %d: %w", l.Seq, err)
		}
	}
	return out, nil
}

// Resubmit puts a dead letter's CID on the fetch work queue again, for
// workqueue.Replay. The item starts afresh: Since is now, so a DAG no
// source has is looked for a whole timeout again.
func Resubmit(js jetstream.JetStream, sub jetlog.Subjects) func(context.Context, workqueue.DeadLetter) error {
	return func(ctx context.Context, l workqueue.DeadLetter) error {
		var it Item
		if err := json.Unmarshal(l.Data, &it); err != nil {
			return err
		}
		it.Since = time.Now().UTC()
		return Enqueue(ctx, js, sub, it)
	}
}
