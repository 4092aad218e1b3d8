package jetlog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

func TestIsStorageFullKnowsEveryFormAFullDiskTakes(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"ferry's own sentinel, wrapped", fmt.Errorf("publish: %w", jetlog.ErrStorageFull), true},
		{"JetStream's insufficient resources", fmt.Errorf("nats: %w", &jetstream.APIError{ErrorCode: 10047, Code: 503, Description: "insufficient resources"}), true},
		{"the OS's ENOSPC passed on by the server", errors.New("write /data/1.blk: no space left on device"), true},
		{"a conflict is not", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{"a timeout is not", context.DeadlineExceeded, false},
		{"nil is not", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := jetlog.IsStorageFull(tc.err); got != tc.want {
				t.Fatalf("IsStorageFull(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestAPublisherGateRefusesBeforeAnythingIsStored(t *testing.T) {
	nt := testutil.StartNATS(t)
	if err := jetlog.EnsureStreams(context.Background(), nt.JS, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		t.Fatal(err)
	}
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	full := fmt.Errorf("%w: the input log cannot be written (test)", jetlog.ErrStorageFull)
	pub.Gate = func() error { return full }
	_, err := pub.Publish(context.Background(), testutil.Replicated(1, 1000, true))
	if !errors.Is(err, jetlog.ErrStorageFull) || !strings.HasPrefix(err.Error(), "disk full: ") {
		t.Fatalf("gated publish: %v, want the gate's disk full error as is", err)
	}
	st, _ := nt.JS.Stream(context.Background(), jetlog.StreamIn)
	if info, _ := st.Info(context.Background()); info.State.Msgs != 0 {
		t.Fatalf("a gated publish stored %d messages", info.State.Msgs)
	}
	pub.Gate = func() error { return nil }
	if _, err := pub.Publish(context.Background(), testutil.Replicated(1, 1000, true)); err != nil {
		t.Fatalf("an open gate: %v", err)
	}
}

// TestEnsurePackStreamsMakesOnlyWhatIsMissing: on a server ferry serve has
// not set up, EnsurePackStreams creates the three pack streams as
// EnsureStreams shapes them; a stream that exists is left as it is, and a
// second call changes nothing.
func TestEnsurePackStreamsMakesOnlyWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	s, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	_, js := testutil.Connect(t, s.ClientURL())
	sub := jetlog.Subjects{Prefix: "p."}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: jetlog.StreamPackDLQ, Subjects: []string{sub.PackDeadLetters()}, Description: "the operator's"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := jetlog.EnsurePackStreams(ctx, js, sub); err != nil {
			t.Fatal(err)
		}
	}
	info := func(name string) jetstream.StreamConfig {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return st.CachedInfo().Config
	}
	if c := info(jetlog.StreamPack); c.Retention != jetstream.WorkQueuePolicy || c.MaxMsgsPerSubject != 1 || !c.DiscardNewPerSubject ||
		c.Subjects[0] != "p.work.pack.>" || c.Replicas != 1 {
		t.Errorf("FERRY_PACK: %+v", c)
	}
	if c := info(jetlog.StreamPackDone); c.MaxMsgsPerSubject != 1 || c.Duplicates != jetlog.DefaultDuplicates || c.Subjects[0] != "p.pack.done.>" {
		t.Errorf("FERRY_PACK_DONE: %+v", c)
	}
	if c := info(jetlog.StreamPackDLQ); c.Description != "the operator's" {
		t.Errorf("FERRY_PACK_DLQ was changed: %+v", c)
	}
	if _, err := js.Stream(ctx, jetlog.StreamIn); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("FERRY_IN: %v, want it left to ferry serve", err)
	}
}
