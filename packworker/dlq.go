package packworker

import (
	"context"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// Resubmit puts a dead letter's job on the pack work queue again, for
// workqueue.Replay; a pack waiting for it, or run again later, takes its
// result.
func Resubmit(js jetstream.JetStream, sub jetlog.Subjects) func(context.Context, workqueue.DeadLetter) error {
	q := Queue(sub)
	return func(ctx context.Context, l workqueue.DeadLetter) error {
		return workqueue.Enqueue(ctx, js, q, l.Key, l.Data)
	}
}
