package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/nats-io/nats.go/jetstream"
)

// NewPublisher returns a publisher of input events on js under the default
// subjects; see events.Publisher.
func NewPublisher(js jetstream.JetStream) *events.Publisher {
	return events.NewPublisher(js, events.DefaultSubjects)
}

// Replay reads the aggregate log from sequence from up to its current end
// and calls fn with each batch of decisions: the whole history of where
// every CAR went, for rebuilding a service's own state.
func Replay(ctx context.Context, js jetstream.JetStream, from uint64, fn func(seq uint64, b aggregator.Batch) error) error {
	return events.Tail(ctx, js, events.StreamAgg, from, false, func(e events.Entry) error {
		var b aggregator.Batch
		if err := json.Unmarshal(e.Data, &b); err != nil {
			return fmt.Errorf("aggregate log %d: %w", e.Seq, err)
		}
		return fn(e.Seq, b)
	})
}
