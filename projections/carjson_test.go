package projections

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/ferry-dev/ferry/events"
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
		c := CarView{Car: pick(), State: pick(), MD5: pick(), ReplicatedAt: pick(), Piece: pick(),
			AggregatePiece: pick(), Reason: pick()}
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
		if rng.IntN(2) == 0 {
			in := &InclusionView{Subtree: ProofPath{Index: rng.Uint64()}, Index: ProofPath{Index: rng.Uint64()}}
			for range rng.IntN(4) {
				in.Subtree.Path = append(in.Subtree.Path, pick())
			}
			if rng.IntN(3) > 0 {
				in.Index.Path = []string{}
			}
			if rng.IntN(3) > 0 {
				in.CBOR = make([]byte, rng.IntN(100))
				for j := range in.CBOR {
					in.CBOR[j] = byte(rng.Uint32())
				}
			}
			c.Inclusion = in
		}
		if rng.IntN(3) == 0 {
			c.Deals = []events.Deal{{Provider: pick(), DealID: rng.Uint64()}}
		}
		want, werr := json.Marshal(&c)
		got, gerr := appendCarJSON(nil, &c, nil)
		if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("view %d:\n got %s (%v)\nwant %s (%v)", i, got, gerr, want, werr)
		}
	}
	bad := CarView{Car: "x", Source: json.RawMessage(`{"a":`)}
	if _, err := appendCarJSON(nil, &bad, nil); err == nil {
		t.Fatal("invalid source encoded without an error")
	}
}
