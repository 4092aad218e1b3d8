package testutil

import (
	"context"
	"testing"

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
