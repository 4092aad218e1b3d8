package jsonscan

import (
	"math/rand/v2"
	"testing"
)

func TestPlainASCIIMatchesAByteLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	edges := []byte{0x00, 0x1f, 0x20, 0x21, '"', '[', '\\', ']', 'a', 0x7e, 0x7f, 0x80, 0xc3, 0xff}
	for range 100000 {
		s := make([]byte, r.IntN(40))
		for i := range s {
			s[i] = 'a'
			if r.IntN(8) == 0 {
				s[i] = edges[r.IntN(len(edges))]
			}
		}
		want := true
		for _, c := range s {
			if c < 0x20 || c == '\\' || c >= 0x80 {
				want = false
			}
		}
		if got := PlainASCII(s); got != want {
			t.Fatalf("PlainASCII(%q) = %v, want %v", s, got, want)
		}
	}
}
