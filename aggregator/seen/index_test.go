package seen_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
)

var _ aggregator.Accepted = (*seen.Index)(nil)

// key is the i-th key of a small key space, so random ops hit the same
// keys again (re-puts, deletes of present and absent keys).
func key(i int) [16]byte {
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], mix(uint64(i)))
	binary.BigEndian.PutUint64(k[8:], mix(uint64(i)+1<<40))
	return k
}

// mix is splitmix64's finalizer: distinct inputs, spread outputs.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// check compares every key of the space and Len with the model.
func check(t *testing.T, ix *seen.Index, model map[[16]byte]uint64, space int, when string) {
	t.Helper()
	if got, want := ix.Len(), len(model); got != want {
		t.Fatalf("%s: Len = %d, the model holds %d", when, got, want)
	}
	for i := range space {
		k := key(i)
		got, ok := ix.Get(k)
		want, wok := model[k]
		if ok != wok || got != want {
			t.Fatalf("%s: key %d: Get = %d,%v, the model says %d,%v", when, i, got, ok, want, wok)
		}
	}
}

func TestIndexAgainstMap(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(3) {
		r := rand.New(rand.NewPCG(seed, 1))
		space := 50 + r.IntN(2000)
		store := seen.DirStore(t.TempDir())
		ix := seen.New(t.TempDir())
		model := map[[16]byte]uint64{}
		var pending []*seen.Frozen
		var last seen.Manifest
		for step := range 3000 {
			k := key(r.IntN(space))
			switch op := r.IntN(100); {
			case op < 60:
				p := r.Uint64()
				ix.Put(k, p)
				model[k] = p
			case op < 85:
				ix.Delete(k)
				delete(model, k)
			case op < 98:
				pending = append(pending, ix.Checkpoint())
			default:
				for _, f := range pending {
					m, err := f.Persist(ctx, store)
					if err != nil {
						t.Fatal(err)
					}
					last = m
				}
				pending = nil
				check(t, ix, model, space, "after persisting")
			}
			if step%500 == 0 {
				check(t, ix, model, space, "during ops")
			}
		}
		check(t, ix, model, space, "at the end")
		f := ix.Checkpoint()
		pending = append(pending, f)
		for _, f := range pending {
			var err error
			if last, err = f.Persist(ctx, store); err != nil {
				t.Fatal(err)
			}
		}
		opened, err := seen.Open(ctx, last, store, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		check(t, opened, model, space, "opened from the manifest")
		opened.Close()
		ix.Close()
	}
}
