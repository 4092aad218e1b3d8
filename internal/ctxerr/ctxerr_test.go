package ctxerr

import (
	"context"
	"errors"
	"testing"
)

func TestNilIfDoneHidesErrorsOnlyAfterTheContextEnds(t *testing.T) {
	boom := errors.New("boom")
	ctx, cancel := context.WithCancel(context.Background())
	if got := NilIfDone(ctx, boom); got != boom {
		t.Fatalf("live context: got %v, want %v", got, boom)
	}
	if got := NilIfDone(ctx, nil); got != nil {
		t.Fatalf("live context, no error: got %v", got)
	}
	cancel()
	if got := NilIfDone(ctx, boom); got != nil {
		t.Fatalf("ended context: got %v, want nil", got)
	}
}
