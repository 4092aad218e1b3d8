package spade

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
)

func TestAnAbandonedCommitmentLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, n := range []int64{0, 1, 64, 1000, 32511, 32512, 100000, 1 << 20} {
		r := io.MultiReader(io.LimitReader(zeros{}, n), iotest.ErrReader(errors.New("connection reset")))
		if _, err := sumCopy(io.Discard, r); err == nil {
			t.Fatalf("%d bytes then an error: no error", n)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > before {
		t.Fatalf("%d goroutines, %d before", got, before)
	}
}

func TestTinyPayloadsHaveTheCommitmentOfTheirZeroPaddedQuad(t *testing.T) {
	data := []byte("a CAR is never this small, but a piece may be")
	small, err := sumCopy(io.Discard, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	padded, err := sumCopy(io.Discard, bytes.NewReader(append(data, make([]byte, 127-len(data))...)))
	if err != nil {
		t.Fatal(err)
	}
	if small.piece.Root != padded.piece.Root || small.piece.Padded != 128 || small.size != uint64(len(data)) {
		t.Fatalf("small %+v, padded %+v", small, padded)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
