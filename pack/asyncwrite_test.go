package pack

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// What an asyncWriter writes is what was given, in order, whatever the
// sizes of the writes against its buffers.
func TestAsyncWriterWritesWhatItIsGiven(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var got, want bytes.Buffer
	a := newAsyncWriter(&got, 100)
	for range 2000 {
		p := make([]byte, rng.IntN(350))
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		want.Write(p)
		var n int
		var err error
		if rng.IntN(2) == 0 {
			n, err = a.Write(p)
		} else {
			n, err = a.WriteString(string(p))
		}
		if n != len(p) || err != nil {
			t.Fatalf("write of %d: %d, %v", len(p), n, err)
		}
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("wrote %d bytes, not the %d given", got.Len(), want.Len())
	}
	if err := a.close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// A failed write is returned by a later Write or by close.
func TestAsyncWriterReturnsTheWriteError(t *testing.T) {
	boom := errors.New("disk full")
	a := newAsyncWriter(failWriter{boom}, 10)
	var err error
	for range 100 {
		if _, err = a.Write(make([]byte, 7)); err != nil {
			break
		}
	}
	if !errors.Is(err, boom) {
		t.Fatalf("writes went on: %v", err)
	}
	if err := a.close(); !errors.Is(err, boom) {
		t.Fatalf("close: %v", err)
	}
}
