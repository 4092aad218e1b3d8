package seen_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ferry-dev/ferry/aggregator/seen"
)

// op is one call on an index: a Put, a Delete or a Checkpoint.
type op struct {
	kind  byte // 'p', 'd', 'c'
	key   int
	print uint64
}

// genOps makes n random ops over a space of keys, checkpointing with
// probability cp per op.
func genOps(seed uint64, n, space int, cp float64) []op {
	r := rand.New(rand.NewPCG(seed, 2))
	var ops []op
	for range n {
		switch x := r.Float64(); {
		case x < cp:
			ops = append(ops, op{kind: 'c'})
		case x < cp+(1-cp)*0.7:
			ops = append(ops, op{kind: 'p', key: r.IntN(space), print: r.Uint64N(4)})
		default:
			ops = append(ops, op{kind: 'd', key: r.IntN(space)})
		}
	}
	return append(ops, op{kind: 'c'})
}

// do applies a put or delete to ix and says whether o is a checkpoint.
func do(ix *seen.Index, o op) (checkpoint bool) {
	switch o.kind {
	case 'p':
		ix.Put(key(o.key), o.print)
	case 'd':
		ix.Delete(key(o.key))
	}
	return o.kind == 'c'
}

// persister persists, in another goroutine as the runner's persister
// does, the checkpoints sent on the channel it returns; once that is
// closed, the last manifest comes out of the other.
func persister(t *testing.T, store seen.RunStore) (chan<- *seen.Frozen, <-chan seen.Manifest) {
	frozen := make(chan *seen.Frozen, 1<<16)
	done := make(chan seen.Manifest, 1)
	go func() {
		var last seen.Manifest
		for f := range frozen {
			m, err := f.Persist(context.Background(), store)
			if err != nil {
				t.Error(err)
			}
			last = m
		}
		done <- last
	}()
	return frozen, done
}

// feed runs ops on a new index; each checkpoint is persisted at once, or
// all at the end when late; it returns the index and every manifest.
func feed(t *testing.T, ops []op, store seen.RunStore, late bool) (*seen.Index, []seen.Manifest) {
	t.Helper()
	ctx := context.Background()
	ix := seen.New(t.TempDir())
	t.Cleanup(func() { ix.Close() })
	var fs []*seen.Frozen
	var ms []seen.Manifest
	persist := func() {
		for _, f := range fs {
			m, err := f.Persist(ctx, store)
			if err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		fs = nil
	}
	for _, o := range ops {
		if do(ix, o) {
			fs = append(fs, ix.Checkpoint())
			if !late {
				persist()
			}
		}
	}
	persist()
	return ix, ms
}

// model applies the ops to a map.
func model(ops []op) map[[16]byte]uint64 {
	m := map[[16]byte]uint64{}
	for _, o := range ops {
		switch o.kind {
		case 'p':
			m[key(o.key)] = o.print
		case 'd':
			delete(m, key(o.key))
		}
	}
	return m
}

// dirFiles returns the files of dir by name.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func TestTheSameOpsAndCheckpointsMakeTheSameRunsAndManifests(t *testing.T) {
	for seed := range uint64(2) {
		ops := genOps(seed, 6000, 1500, 0.01)
		a, b := t.TempDir(), t.TempDir()
		ixA, msA := feed(t, ops, seen.DirStore(a), false)
		ixB, msB := feed(t, ops, seen.DirStore(b), true)
		if !slices.EqualFunc(msA, msB, func(x, y seen.Manifest) bool { return bytes.Equal(x, y) }) {
			t.Fatalf("seed %d: persisting at once and persisting late gave other manifests", seed)
		}
		fa, fb := dirFiles(t, a), dirFiles(t, b)
		if len(fa) < 2 {
			t.Fatalf("seed %d: only %d runs were stored", seed, len(fa))
		}
		for name, data := range fa {
			if !bytes.Equal(fb[name], data) {
				t.Fatalf("seed %d: run %s is in one store and not the other", seed, name)
			}
		}
		if len(fa) != len(fb) {
			t.Fatalf("seed %d: the stores hold %d and %d runs", seed, len(fa), len(fb))
		}
		check(t, ixA, model(ops), 1500, "fed once")
		check(t, ixB, model(ops), 1500, "fed again")
	}
}

func TestAnotherCheckpointScheduleGivesTheSameContent(t *testing.T) {
	ctx := context.Background()
	ops := genOps(9, 8000, 2000, 0.005)
	var plain []op
	for _, o := range ops {
		if o.kind != 'c' {
			plain = append(plain, o)
		}
	}
	r := rand.New(rand.NewPCG(3, 3))
	var other []op
	for _, o := range plain {
		other = append(other, o)
		if r.IntN(40) == 0 {
			other = append(other, op{kind: 'c'})
		}
	}
	other = append(other, op{kind: 'c'})
	want := model(ops)
	for _, sched := range [][]op{ops, other} {
		store := seen.DirStore(t.TempDir())
		ix, ms := feed(t, sched, store, false)
		check(t, ix, want, 2000, "live")
		opened, err := seen.Open(ctx, ms[len(ms)-1], store, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		check(t, opened, want, 2000, "opened")
		opened.Close()
	}
}

func TestPersistIsIdempotentAndInOrder(t *testing.T) {
	ctx := context.Background()
	store := seen.DirStore(t.TempDir())
	ix := seen.New(t.TempDir())
	defer ix.Close()
	ix.Put(key(1), 1)
	f1 := ix.Checkpoint()
	ix.Put(key(2), 2)
	f2 := ix.Checkpoint()
	if _, err := f2.Persist(ctx, store); !errors.Is(err, seen.ErrOrder) {
		t.Fatalf("persisting the second checkpoint first gave %v, want ErrOrder", err)
	}
	m1, err := f1.Persist(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f1.Persist(ctx, store)
	if err != nil || !bytes.Equal(again, m1) {
		t.Fatalf("persisting again gave %q, %v; want %q", again, err, m1)
	}
	m2, err := f2.Persist(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		m    seen.Manifest
		keys int
	}{{m1, 1}, {m2, 2}} {
		if n, err := c.m.Keys(); err != nil || n != c.keys {
			t.Fatalf("manifest %q: Keys = %d, %v; want %d", c.m, n, err, c.keys)
		}
	}
}

func TestACorruptCachedRunIsFetchedAgainAndACorruptStoredRunRefused(t *testing.T) {
	ctx := context.Background()
	ops := genOps(5, 3000, 3000, 0.002)
	storeDir := t.TempDir()
	store := seen.DirStore(storeDir)
	_, ms := feed(t, ops, store, false)
	m := ms[len(ms)-1]
	want := model(ops)

	// A cache an earlier process left, with one run corrupt.
	warm := t.TempDir()
	if err := seen.Prefetch(ctx, m, store, warm); err != nil {
		t.Fatal(err)
	}
	runs := dirFiles(t, warm)
	if len(runs) == 0 {
		t.Fatal("Prefetch cached no run")
	}
	cache := t.TempDir()
	corrupt := false
	for name, data := range runs {
		if !corrupt {
			data = bytes.Clone(data)
			data[len(data)/3] ^= 0x40
			corrupt = true
		}
		if err := os.WriteFile(filepath.Join(cache, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ix, err := seen.Open(ctx, m, store, cache)
	if err != nil {
		t.Fatal(err)
	}
	check(t, ix, want, 3000, "opened over a corrupt cache")
	ix.Close()
	for name, data := range dirFiles(t, cache) {
		if !bytes.Equal(data, runs[name]) {
			t.Fatalf("cached run %s was not fetched again", name)
		}
	}

	for name, data := range runs {
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 0x01
		if err := os.WriteFile(filepath.Join(storeDir, name), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := seen.Open(ctx, m, store, t.TempDir()); !errors.Is(err, seen.ErrCorrupt) {
			t.Fatalf("opening with a corrupt stored run gave %v, want ErrCorrupt", err)
		}
		break
	}
	for _, bad := range []string{"", "ferry-seen 1\nkeys 1\nrun 00\n", "ferry-seen 1\nkeys x\n", string(m[:len(m)-1])} {
		if _, err := seen.Open(ctx, seen.Manifest(bad), store, t.TempDir()); !errors.Is(err, seen.ErrCorrupt) {
			t.Fatalf("opening manifest %q gave %v, want ErrCorrupt", bad, err)
		}
	}
}

// The fold's goroutine puts, deletes and looks up while another persists
// its checkpoints (run with -race).
func TestPersistRunsBesideTheFold(t *testing.T) {
	ctx := context.Background()
	ops := genOps(11, 20000, 4000, 0.003)
	store := seen.DirStore(t.TempDir())
	ix := seen.New(t.TempDir())
	defer ix.Close()
	frozen, done := persister(t, store)
	live := map[[16]byte]uint64{}
	for i, o := range ops {
		k := key(o.key)
		switch o.kind {
		case 'p':
			ix.Put(k, o.print)
			live[k] = o.print
		case 'd':
			ix.Delete(k)
			delete(live, k)
		case 'c':
			frozen <- ix.Checkpoint()
		}
		probe := key((i * 7) % 4000)
		got, ok := ix.Get(probe)
		if want, wok := live[probe]; ok != wok || got != want {
			t.Fatalf("op %d: key %d: Get = %d,%v, the model says %d,%v", i, (i*7)%4000, got, ok, want, wok)
		}
	}
	close(frozen)
	m := <-done
	check(t, ix, live, 4000, "after the persister ended")
	opened, err := seen.Open(ctx, m, store, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	check(t, opened, live, 4000, "opened")
}

// FuzzIndex reads ops from bytes over a space of 32 keys.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 255, 4, 130, 255, 131, 0, 255})
	f.Add([]byte{1, 129, 255, 1, 255, 129, 255, 1, 255})
	f.Add(bytes.Repeat([]byte{5, 6, 255, 133, 255, 7, 134}, 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ops []op
		for i, b := range data {
			switch {
			case b == 255:
				ops = append(ops, op{kind: 'c'})
			case b&128 != 0:
				ops = append(ops, op{kind: 'd', key: int(b & 31)})
			default:
				ops = append(ops, op{kind: 'p', key: int(b & 31), print: uint64(i % 3)})
			}
		}
		ops = append(ops, op{kind: 'c'})
		store := seen.DirStore(t.TempDir())
		ix, ms := feed(t, ops, store, false)
		check(t, ix, model(ops), 32, "fed")
		opened, err := seen.Open(context.Background(), ms[len(ms)-1], store, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer opened.Close()
		check(t, opened, model(ops), 32, "opened")
	})
}

// noStore is a RunStore that holds nothing.
type noStore struct{}

func (noStore) Put(context.Context, string, io.Reader) error { return errors.New("no store") }
func (noStore) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("no store")
}
func (noStore) Has(context.Context, string) (bool, error) { return false, nil }

// After a standby's Prefetch, the Open of its takeover reads no store.
func TestAfterPrefetchOpenNeedsNoStore(t *testing.T) {
	ctx := context.Background()
	ops := genOps(6, 3000, 2000, 0.003)
	store := seen.DirStore(t.TempDir())
	_, ms := feed(t, ops, store, false)
	cache := t.TempDir()
	if err := seen.Prefetch(ctx, ms[len(ms)-1], store, cache); err != nil {
		t.Fatal(err)
	}
	ix, err := seen.Open(ctx, ms[len(ms)-1], noStore{}, cache)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	check(t, ix, model(ops), 2000, "opened from the prefetched cache")
	if _, err := seen.Open(ctx, ms[len(ms)-1], noStore{}, t.TempDir()); err == nil {
		t.Fatal("an Open with an empty cache and no store succeeded")
	}
}

// A leader that opens the index of a checkpoint's manifest (a snapshot's)
// and folds on writes the manifests of the leader that folded throughout:
// what a snapshot holds decides everything after it.
func TestAnIndexOpenedAtACheckpointGoesOnLikeTheLiveOne(t *testing.T) {
	ctx := context.Background()
	ops := genOps(21, 8000, 2500, 0.004)
	store := seen.DirStore(t.TempDir())
	live, ms := feed(t, ops, store, true)
	defer live.Close()
	cut, seenCkpts := len(ops)/3, 0
	for _, o := range ops[:cut] {
		if o.kind == 'c' {
			seenCkpts++
		}
	}
	for ops[cut-1].kind != 'c' { // end the prefix at a checkpoint
		cut++
		if ops[cut-1].kind == 'c' {
			seenCkpts++
		}
	}
	opened, err := seen.Open(ctx, ms[seenCkpts-1], store, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	var got []seen.Manifest
	for _, o := range ops[cut:] {
		if do(opened, o) {
			m, err := opened.Checkpoint().Persist(ctx, store)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
	}
	want := ms[seenCkpts:]
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("%d checkpoints after opening, %d in the live run", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("checkpoint %d after opening: manifest\n%s\nthe live index wrote\n%s", i, got[i], want[i])
		}
	}
	check(t, opened, model(ops), 2500, "opened and folded on")
}
