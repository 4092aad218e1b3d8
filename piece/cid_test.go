package piece

import (
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"
)

// TestCIDTextAgreesWithGoCid: V2Text prints what go-cid prints for V2,
// and Parse's fast path reads both CID forms as go-cid's path (FromCID)
// does, for random commitments of every tree height.
func TestCIDTextAgreesWithGoCid(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		var c Commitment
		for j := range c.Root {
			c.Root[j] = byte(rng.Uint32())
		}
		c.Root[31] &= 0x3f
		c.Padded = MinPaddedSize << rng.IntN(50)
		c.Payload = 1 + rng.Uint64N(Unpadded(c.Padded))
		if i%7 == 0 {
			c.Payload = Unpadded(c.Padded)
		}
		v2, err := c.V2()
		if err != nil {
			t.Fatal(err)
		}
		text, err := c.V2Text()
		if err != nil || text != v2.String() {
			t.Fatalf("%+v: V2Text %q, %v; go-cid prints %s", c, text, err, v2)
		}
		for _, form := range []struct {
			cid    cid.Cid
			padded uint64
		}{{v2, 0}, {v2, c.Padded}, {c.V1(), c.Padded}} {
			want, werr := FromCID(form.cid, form.padded)
			got, gerr := Parse(form.cid.String(), form.padded)
			if got != want || (gerr == nil) != (werr == nil) {
				t.Fatalf("Parse(%s, %d) = %+v, %v; FromCID %+v, %v", form.cid, form.padded, got, gerr, want, werr)
			}
		}
	}
	if _, err := (Commitment{Padded: 128}).V2Text(); err == nil {
		t.Fatal("V2Text of a commitment without a payload")
	}
}
