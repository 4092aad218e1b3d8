package audit

import (
	"context"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// SetTail makes the audit read its logs with t until the test ends.
func SetTail(cleanup func(func()), t func(ctx context.Context, js jetstream.JetStream, stream string, from uint64, follow bool, fn func(jetlog.Entry) error) error) {
	old := tail
	tail = t
	cleanup(func() { tail = old })
}
