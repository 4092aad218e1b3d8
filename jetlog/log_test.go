package jetlog_test

import (
	"context"
	"testing"

	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
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
