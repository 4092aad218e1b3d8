package testutil

import (
	"context"
	"testing"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// Msgs is the number of messages stream holds now.
func Msgs(tb testing.TB, js jetstream.JetStream, stream string) uint64 {
	tb.Helper()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// Inputs decodes the whole input log, in order.
func Inputs(tb testing.TB, js jetstream.JetStream) []events.Event {
	tb.Helper()
	var out []events.Event
	err := jetlog.Tail(context.Background(), js, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		ev, err := events.Decode(e.Data)
		if err != nil {
			return err
		}
		out = append(out, ev)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
