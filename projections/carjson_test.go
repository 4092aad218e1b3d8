package projections

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/wire"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

// TestCarJSONIsMarshal holds the status API's hand-written encoding equal
// to encoding/json's, byte for byte, over random views with every field
// set or not and strings that need escaping.
func TestCarJSONIsMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "bagbaieraplain", "q\"uote", `back\slash`, "<tag>&", "ctl\x01\n\t", "ünï©ødé",
		"bad\xffutf8", "line\u2028sep\u2029", "https://carpark.example/a/b.car?x=1&y=2"}
	raws := []string{`{"space":"did:key:z6Mk"}`, `{ "a" : [1, 2 ,{"b":null}] }`, `{"h":"<script>&"}`,
		`"line\u2028"`, "{\"u\":\"\u2028\"}", `null`, `[1,2]`, ` 7 `}
	pick := func() string { return strs[rng.IntN(len(strs))] }
	for i := range 5000 {
		c := wire.CarView{Car: pick(), State: pick(), MD5: pick(), ReplicatedAt: pick(), Piece: pick(),
			AggregatePiece: pick(), Reason: pick(), Group: pick()}
		if rng.IntN(2) == 0 {
			c.Size, c.PieceSize, c.Aggregate = rng.Uint64(), uint64(rng.IntN(3))<<rng.IntN(40), uint64(rng.IntN(3))
		}
		for range rng.IntN(3) {
			c.URLs = append(c.URLs, pick())
		}
		if rng.IntN(2) == 0 {
			c.Source = json.RawMessage(raws[rng.IntN(len(raws))])
		}
		if rng.IntN(2) == 0 {
			pos, off := rng.IntN(1<<18), rng.Uint64()
			c.Position, c.Offset = &pos, &off
		}
		var proof *frc58.Proof
		if rng.IntN(2) == 0 {
			proof = &frc58.Proof{}
			proof.ProofSubtree.Index, proof.ProofIndex.Index = rng.Uint64(), rng.Uint64()
			for _, path := range []*[]merkletree.Node{&proof.ProofSubtree.Path, &proof.ProofIndex.Path} {
				for range rng.IntN(30) {
					var n merkletree.Node
					for j := range n {
						n[j] = byte(rng.Uint32())
					}
					*path = append(*path, n)
				}
			}
			// The view the status API answers: the one Store.Car gives.
			var err error
			if c.Inclusion, err = Inclusion(proof); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(3) == 0 {
			c.Deals = []events.Deal{{Provider: pick(), DealID: rng.Uint64()}}
		}
		want, werr := json.Marshal(&c)
		c2 := c
		c2.Inclusion = nil // rendered from the proof alone
		got, gerr := appendCarJSON(nil, &c2, proof)
		if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("view %d:\n got %s (%v)\nwant %s (%v)", i, got, gerr, want, werr)
		}
	}
	bad := wire.CarView{Car: "x", Source: json.RawMessage(`{"a":`)}
	if _, err := appendCarJSON(nil, &bad, nil); err == nil {
		t.Fatal("invalid source encoded without an error")
	}
}
