package jetlog_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

func TestTailEndsAtTheEndOfTheLogEvenWhenItsLastMessagesAreDeleted(t *testing.T) {
	nt := testutil.StartNATS(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := nt.JS.Publish(ctx, jetlog.DefaultSubjects.DeadLetter(testutil.CarCID(i).String()), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := nt.JS.Stream(ctx, jetlog.StreamDLQ)
	read := func(from uint64) []uint64 {
		var seqs []uint64
		if err := jetlog.Tail(ctx, nt.JS, jetlog.StreamDLQ, from, false, func(e jetlog.Entry) error {
			seqs = append(seqs, e.Seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	if got := read(1); len(got) != 5 {
		t.Fatalf("read %v", got)
	}
	for _, seq := range []uint64{4, 5} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(1); len(got) != 3 || got[2] != 3 {
		t.Fatalf("after deleting the last two, read %v", got)
	}
	if got := read(4); len(got) != 0 {
		t.Fatalf("from a deleted tail, read %v", got)
	}
	for _, seq := range []uint64{1, 2, 3} {
		st.DeleteMsg(ctx, seq)
	}
	if got := read(1); len(got) != 0 {
		t.Fatalf("from an emptied log, read %v", got)
	}
}

// read tails stream (subject, when set) from sequence 1 to its end.
func read(t *testing.T, js jetstream.JetStream, stream, subject string) ([]uint64, error) {
	t.Helper()
	var seqs []uint64
	err := jetlog.TailSubject(context.Background(), js, stream, subject, 1, false, func(e jetlog.Entry) error {
		seqs = append(seqs, e.Seq)
		return nil
	})
	return seqs, err
}

func TestAFilteredTailEndsAtItsSubjectsLastMessageWhenTheStreamEndsOnAnother(t *testing.T) {
	nt := testutil.StartNATS(t)
	ctx := context.Background()
	sub := jetlog.DefaultSubjects
	// FERRY_AGG: deals at 2 and 4, the stream's last message (6) on the
	// other subject.
	for i, subject := range []string{sub.Decisions(), sub.Deals(), sub.Decisions(), sub.Deals(), sub.Decisions(), sub.Decisions()} {
		if _, err := nt.JS.Publish(ctx, subject, []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Any wait for sequence 6 would end in ErrBehind after this.
	jetlog.SetReplicaEnd(t, 200*time.Millisecond, func(string) uint64 { return 0 })
	got, err := read(t, nt.JS, jetlog.StreamAgg, sub.Deals())
	if err != nil || !slices.Equal(got, []uint64{2, 4}) {
		t.Fatalf("read %v, %v; want [2 4]", got, err)
	}
	st, _ := nt.JS.Stream(ctx, jetlog.StreamAgg)
	if err := st.DeleteMsg(ctx, 4); err != nil {
		t.Fatal(err)
	}
	got, err = read(t, nt.JS, jetlog.StreamAgg, sub.Deals())
	if err != nil || !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after deleting the subject's last message, read %v, %v; want [2]", got, err)
	}
}

func TestATailWhoseReplicaIsBehindTheLeaderFailsSayingHowFarItGot(t *testing.T) {
	nt := testutil.StartNATS(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := nt.JS.Publish(ctx, jetlog.DefaultSubjects.DeadLetter(testutil.CarCID(i).String()), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	// The consumer's replica holds sequences 1 and 2 and says nothing is
	// pending after them; the leader holds 5.
	jetlog.SetReplicaEnd(t, 200*time.Millisecond, func(stream string) uint64 {
		if stream == jetlog.StreamDLQ {
			return 2
		}
		return 0
	})
	got, err := read(t, nt.JS, jetlog.StreamDLQ, "")
	var behind *jetlog.BehindError
	if !errors.As(err, &behind) || !errors.Is(err, jetlog.ErrBehind) {
		t.Fatalf("read %v, %v; want a BehindError", got, err)
	}
	if behind.Messages != 2 || behind.Read != 2 || behind.Last != 5 || !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("read %v, %+v; want 2 messages up to sequence 2 of 5", got, behind)
	}
	const want = "read 2 messages of FERRY_DLQ up to sequence 2 of 5: the replica the consumer reads is behind the stream"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	// A filtered read is held to its subject's last message as the leader
	// holds it.
	if _, err := read(t, nt.JS, jetlog.StreamDLQ, jetlog.DefaultSubjects.DeadLetters()); !errors.Is(err, jetlog.ErrBehind) {
		t.Fatalf("filtered read: %v; want ErrBehind", err)
	}
	// What the replica lacks is gone from the leader too: the read is whole.
	st, _ := nt.JS.Stream(ctx, jetlog.StreamDLQ)
	for _, seq := range []uint64{3, 4, 5} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := read(t, nt.JS, jetlog.StreamDLQ, ""); err != nil || !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("after deleting 3 to 5, read %v, %v; want [1 2]", got, err)
	}
}

func TestATailOfAStreamThatAllowsDirectGetsAsksItsLeader(t *testing.T) {
	nt := testutil.StartNATS(t)
	ctx := context.Background()
	st, err := nt.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "DIRECT", Subjects: []string{"direct.>"}, AllowDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"direct.a", "direct.b", "direct.a", "direct.b"} {
		if _, err := nt.JS.Publish(ctx, subject, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteMsg(ctx, 4); err != nil {
		t.Fatal(err)
	}
	jetlog.SetReplicaEnd(t, 200*time.Millisecond, func(string) uint64 { return 0 })
	for subject, want := range map[string][]uint64{"": {1, 2, 3}, "direct.a": {1, 3}, "direct.b": {2}} {
		if got, err := read(t, nt.JS, "DIRECT", subject); err != nil || !slices.Equal(got, want) {
			t.Fatalf("subject %q: read %v, %v; want %v", subject, got, err, want)
		}
	}
}
