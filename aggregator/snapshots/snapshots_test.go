package snapshots_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
	"github.com/ferry-dev/ferry/aggregator/snapshots"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natscluster"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testConfig is a 64 KiB deal (a few CARs per aggregate) with the deal
// clock on, so that a few hundred inputs close, offer, fail and requeue
// aggregates.
func testConfig() events.Settings {
	return events.Settings{DealSize: 64 << 10, MinPayload: 16 << 10, MaxWait: time.Minute,
		DealTimeout: 2 * time.Minute, MaxOffers: 3, OfferBackoff: 30 * time.Second}
}

// history is n inputs of a busy ferry drawn from seed, starting at CAR
// first: CARs with and without pieces, their pieces, copies, ticks,
// closes, offers and deal news about recent aggregates.
func history(seed uint64, first, n int) []events.Event {
	r := rand.New(rand.NewPCG(seed, 19))
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var out []events.Event
	var queued []*events.CarReplicated
	for i := first; i < first+n; i++ {
		agg := uint64(1 + r.IntN(i/4+1))
		switch k := r.IntN(20); {
		case k < 10:
			e := testutil.Replicated(i, 1+r.Uint64N(20000), r.IntN(3) > 0)
			if e.Piece == "" {
				queued = append(queued, e)
			}
			out = append(out, e)
		case k < 13 && len(queued) > 0:
			e := queued[0]
			queued = queued[1:]
			out = append(out, &events.CarPiece{Car: e.Car, Piece: testutil.FakePiece(i, e.Size).MustV2().String()})
		case k < 14:
			out = append(out, testutil.Replicated(r.IntN(i+1), 1+r.Uint64N(20000), true))
		case k < 16:
			out = append(out, &events.Tick{Time: t0.Add(time.Duration(i) * 10 * time.Second)})
		case k < 17:
			out = append(out, &events.AggregateClose{Aggregate: agg})
		case k < 18:
			out = append(out, &events.DealOffered{Aggregate: agg})
		default:
			st := []string{events.StatusFailed, events.StatusPublished}[r.IntN(2)]
			out = append(out, &events.DealReport{Aggregate: fmt.Sprint(agg), Status: st, Reason: "x",
				Deals: []events.Deal{{Provider: "f01000", DealID: r.Uint64N(5)}}})
		}
	}
	// End on a CAR, which always decides something: the tests wait for
	// the last input's batch.
	return append(out, testutil.Replicated(first+n, 100, true))
}

func publish(t *testing.T, js jetstream.JetStream, evs []events.Event) {
	t.Helper()
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	for _, ev := range evs {
		if _, err := pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// reference is what a single leader that was never stopped appends for
// the input log: it folds FERRY_IN, as stored, in memory from sequence 1.
func reference(t *testing.T, js jetstream.JetStream) [][]byte {
	t.Helper()
	st := aggregator.New(testConfig())
	var out [][]byte
	err := jetlog.Tail(context.Background(), js, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		b := st.ApplyInput(aggregator.Input{Seq: e.Seq, Data: e.Data, Stored: e.Time})
		if len(b.Decisions) == 0 {
			return nil
		}
		data, err := events.EncodeBatch(nil, &b)
		out = append(out, data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logged is the aggregate log's batches, each as stored.
func logged(t *testing.T, js jetstream.JetStream) [][]byte {
	t.Helper()
	var out [][]byte
	err := jetlog.Tail(context.Background(), js, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		for b := range events.Batches(e.Data) {
			out = append(out, bytes.Clone(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lastIn is the input of the last batch of the aggregate log (0: none).
func lastIn(t *testing.T, js jetstream.JetStream) uint64 {
	batches := logged(t, js)
	if len(batches) == 0 {
		return 0
	}
	var b events.Batch
	if err := events.DecodeBatch(batches[len(batches)-1], &b); err != nil {
		t.Fatal(err)
	}
	return b.In
}

func inputsEnd(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	seq, err := jetlog.LastSeq(context.Background(), js, jetlog.StreamIn, "")
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// logBuffer collects a process's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ferry is one aggregator process: its own connection, snapshot cache and
// runner.
type ferry struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *snapshots.Store
	runner *aggregator.Runner
	cache  string
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

func startFerry(t *testing.T, url, name string, every uint64) *ferry {
	t.Helper()
	f := &ferry{cache: filepath.Join(t.TempDir(), "seen"), logs: &logBuffer{}, done: make(chan struct{})}
	f.nc, f.js = testutil.Connect(t, url)
	log := slog.New(slog.NewTextHandler(f.logs, nil))
	var err error
	if f.store, err = snapshots.Open(context.Background(), f.js, f.cache, log); err != nil {
		t.Fatal(err)
	}
	f.runner = aggregator.NewRunner(f.js, aggregator.RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects,
		Holder: name, Log: log, Snapshots: f.store, SnapshotEvery: every})
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer close(f.done)
		_ = f.runner.Run(ctx)
	}()
	t.Cleanup(f.kill)
	return f
}

// kill ends the process as a crash does: its connection goes first, so
// nothing it had in flight (an append, a snapshot) is finished.
func (f *ferry) kill() {
	f.nc.Close()
	f.cancel()
	<-f.done
}

// latest is the snapshot object FERRY_SNAP holds (ok false: none).
func latest(t *testing.T, js jetstream.JetStream) (aggregator.Snapshot, bool) {
	t.Helper()
	obs, err := js.ObjectStore(context.Background(), jetlog.BucketSnap)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(context.Background(), "snapshot")
	if err != nil {
		return aggregator.Snapshot{}, false
	}
	snap, err := snapshots.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return snap, true
}

// storedRuns are the names of the runs FERRY_SNAP holds.
func storedRuns(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	obs, err := js.ObjectStore(context.Background(), jetlog.BucketSnap)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := obs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		if name, ok := strings.CutPrefix(o.Name, "runs/"); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func cachedRuns(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if len(e.Name()) == 64 {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names
}

func manifestRuns(t *testing.T, snap aggregator.Snapshot) []string {
	t.Helper()
	names, err := seen.Manifest(snap.Seen).RunNames()
	if err != nil {
		t.Fatal(err)
	}
	names = slices.Clone(names)
	slices.Sort(names)
	return names
}

// rebuild is aggregator.Rebuild through store (nil: from sequence 1 in
// the heap), with the state encoded.
func rebuild(t *testing.T, js jetstream.JetStream, cfg events.Settings, store aggregator.Snapshots) ([]byte, uint64) {
	t.Helper()
	st, seq, err := aggregator.Rebuild(context.Background(), js, cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := st.Accepted().(io.Closer); ok {
		defer c.Close()
	}
	return st.MarshalSnapshot(nil), seq
}

func openStore(t *testing.T, js jetstream.JetStream, logs io.Writer) *snapshots.Store {
	t.Helper()
	s, err := snapshots.Open(context.Background(), js, t.TempDir(), slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// leadToSnapshot starts a leader with a snapshot every `every` inputs and
// waits until it has folded every input published and stored a snapshot
// less than every inputs from their end.
func leadToSnapshot(t *testing.T, js jetstream.JetStream, url string, every uint64) *ferry {
	t.Helper()
	f := startFerry(t, url, "a", every)
	end := inputsEnd(t, js)
	testutil.Eventually(t, 60*time.Second, "the leader to fold every input", func() bool { return lastIn(t, js) == end })
	testutil.Eventually(t, 20*time.Second, "a snapshot near the end", func() bool {
		snap, ok := latest(t, js)
		return ok && snap.LastIn+every > end
	})
	return f
}

// A leader killed after it stored snapshots: the ferry that takes over
// loads the latest one (its runs prefetched while it stood by), folds the
// batches after it, and from then on appends exactly what one leader that
// was never stopped would have appended.
func TestANewLeaderStartsFromTheLatestSnapshotAndAppendsWhatOneLeaderWould(t *testing.T) {
	srv := testutil.StartNATS(t)
	js := srv.JS
	publish(t, js, history(1, 0, 400))
	a := leadToSnapshot(t, js, srv.URL(), 37)
	// A standby prefetches the latest snapshot's runs.
	b := startFerry(t, srv.URL(), "b", 37)
	testutil.Eventually(t, 3*aggregator.PrefetchEvery, "the standby to prefetch the snapshot's runs", func() bool {
		snap, _ := latest(t, js)
		return slices.Equal(cachedRuns(t, b.cache), manifestRuns(t, snap))
	})
	// The log moves on past the snapshot; then the leader dies.
	publish(t, js, history(2, 1000, 20))
	end := inputsEnd(t, js)
	testutil.Eventually(t, 20*time.Second, "the leader to fold the rest", func() bool { return lastIn(t, js) == end })
	a.kill()
	snap, _ := latest(t, js)
	aggEnd, err := jetlog.LastSeq(context.Background(), js, jetlog.StreamAgg, "")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Seq >= aggEnd {
		t.Fatalf("the snapshot follows message %d of %d: the log did not move on", snap.Seq, aggEnd)
	}

	// A rebuild through the snapshots, with a cold cache, equals a full
	// rebuild from sequence 1.
	var logs logBuffer
	got, gotSeq := rebuild(t, js, testConfig(), openStore(t, js, &logs))
	want, wantSeq := rebuild(t, js, testConfig(), nil)
	if !bytes.Equal(got, want) || gotSeq != wantSeq {
		t.Fatalf("the state from the snapshot (at %d) differs from the full rebuild's (at %d)", gotSeq, wantSeq)
	}
	if line := fmt.Sprintf("aggregator snapshot loaded\" aggregateLogSeq=%d", snap.Seq); !strings.Contains(logs.String(), line) {
		t.Fatalf("the rebuild did not load the snapshot at %d:\n%s", snap.Seq, logs.String())
	}

	// The lease lapses (as its TTL would); the standby takes over.
	kv, err := js.KeyValue(context.Background(), jetlog.BucketLeader)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(context.Background(), "aggregator"); err != nil {
		t.Fatal(err)
	}
	publish(t, js, history(3, 2000, 300))
	end = inputsEnd(t, js)
	testutil.Eventually(t, 60*time.Second, "the new leader to fold every input", func() bool { return lastIn(t, js) == end })
	if line := fmt.Sprintf("aggregator snapshot loaded\" aggregateLogSeq=%d", snap.Seq); !strings.Contains(b.logs.String(), line) {
		t.Fatalf("the new leader did not start from the snapshot at %d:\n%s", snap.Seq, b.logs.String())
	}
	if got, want := logged(t, js), reference(t, js); !slices.EqualFunc(got, want, bytes.Equal) {
		for i := range min(len(got), len(want)) {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("batch %d of the log:\n%s\nwant\n%s", i+1, got[i], want[i])
			}
		}
		t.Fatalf("the log holds %d batches, one leader would have appended %d", len(got), len(want))
	}

	// Retention: the bucket and the new leader's cache hold the runs the
	// latest snapshot names and no others.
	testutil.Eventually(t, 20*time.Second, "a snapshot by the new leader, and the runs it supersedes deleted", func() bool {
		s, _ := latest(t, js)
		return s.Seq > snap.Seq && slices.Equal(storedRuns(t, js), manifestRuns(t, s))
	})
}

// copyLog replaces FERRY_AGG with the messages msgs, as a restore of a
// backup does.
func copyLog(t *testing.T, js jetstream.JetStream, msgs [][]byte) {
	t.Helper()
	ctx := context.Background()
	if err := js.DeleteStream(ctx, jetlog.StreamAgg); err != nil {
		t.Fatal(err)
	}
	if err := jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := js.Publish(ctx, jetlog.DefaultSubjects.Decisions(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func messages(t *testing.T, js jetstream.JetStream) [][]byte {
	t.Helper()
	var out [][]byte
	err := jetlog.Tail(context.Background(), js, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		out = append(out, bytes.Clone(e.Data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A snapshot that does not describe the aggregate log as it is — newer
// than the log (a restored older backup), of a log that holds another
// message at its sequence, or of other settings — is passed over with the
// reason in the log, and the rebuild starts from sequence 1.
func TestASnapshotOfAnotherLogIsPassedOver(t *testing.T) {
	srv := testutil.StartNATS(t)
	js := srv.JS
	publish(t, js, history(4, 0, 300))
	a := leadToSnapshot(t, js, srv.URL(), 50)
	a.kill()
	snap, _ := latest(t, js)
	all := messages(t, js)
	if int(snap.Seq) >= len(all) || snap.Seq < 3 {
		t.Fatalf("the snapshot follows message %d of %d; the test needs messages after it", snap.Seq, len(all))
	}

	passedOver := func(cfg events.Settings, why string) {
		t.Helper()
		var logs logBuffer
		got, gotSeq := rebuild(t, js, cfg, openStore(t, js, &logs))
		want, wantSeq := rebuild(t, js, cfg, nil)
		if !bytes.Equal(got, want) || gotSeq != wantSeq {
			t.Fatalf("%s: the rebuild differs from the full rebuild", why)
		}
		if out := logs.String(); !strings.Contains(out, "aggregator snapshot not used: rebuilding from sequence 1") || !strings.Contains(out, why) {
			t.Fatalf("the log does not say the snapshot was passed over because %s:\n%s", why, out)
		}
	}
	// Other settings: the snapshot's state was folded under the log's.
	other := testConfig()
	other.MaxWait += time.Second
	passedOver(other, "taken under settings")

	// A log that holds another message at the snapshot's sequence: the
	// same batches, grouped otherwise.
	regrouped := slices.Clone(all[:snap.Seq-1])
	regrouped = append(regrouped, events.AppendBatch(bytes.Clone(all[snap.Seq-1]), all[snap.Seq]))
	regrouped = append(regrouped, all[snap.Seq+1:]...)
	copyLog(t, js, regrouped)
	passedOver(testConfig(), "holds another message at")

	// A restored older backup: the log ends before the snapshot's message.
	copyLog(t, js, all[:snap.Seq-2])
	passedOver(testConfig(), "a restored older backup")

	// The log restored whole again: the snapshot is used.
	copyLog(t, js, all)
	var logs logBuffer
	got, _ := rebuild(t, js, testConfig(), openStore(t, js, &logs))
	if want, _ := rebuild(t, js, testConfig(), nil); !bytes.Equal(got, want) || !strings.Contains(logs.String(), "aggregator snapshot loaded") {
		t.Fatalf("the snapshot of the log as it is was not used, or differs:\n%s", logs.String())
	}
}

// A standby's prefetched cache is all a takeover needs: with the runs
// gone from the bucket, the prefetched ferry still loads the snapshot,
// while one with a cold cache cannot and rebuilds from sequence 1.
func TestAPrefetchedCacheTakesOverWithoutTheBucketsRuns(t *testing.T) {
	srv := testutil.StartNATS(t)
	js := srv.JS
	publish(t, js, history(5, 0, 200))
	a := leadToSnapshot(t, js, srv.URL(), 40)
	a.kill()
	var warmLogs, coldLogs logBuffer
	warm := openStore(t, js, &warmLogs)
	if err := warm.Prefetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(context.Background(), jetlog.BucketSnap)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range storedRuns(t, js) {
		if err := obs.Delete(context.Background(), "runs/"+name); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := rebuild(t, js, testConfig(), nil)
	if got, _ := rebuild(t, js, testConfig(), warm); !bytes.Equal(got, want) || !strings.Contains(warmLogs.String(), "aggregator snapshot loaded") {
		t.Fatalf("the prefetched ferry did not load the snapshot from its cache:\n%s", warmLogs.String())
	}
	if got, _ := rebuild(t, js, testConfig(), openStore(t, js, &coldLogs)); !bytes.Equal(got, want) || !strings.Contains(coldLogs.String(), "snapshot not used") {
		t.Fatalf("a cold ferry used a snapshot whose runs are gone:\n%s", coldLogs.String())
	}
}

// On a cluster the bucket has the streams' replicas: with the server that
// leads it gone, a ferry with a cold cache still loads the snapshot, runs
// and all, from the others.
func TestTheSnapshotBucketIsReplicated(t *testing.T) {
	c := natscluster.Start(t, 3)
	_, js := c.Connect()
	ctx := context.Background()
	// Right after the start the meta leader may not know every server yet,
	// and refuses a stream of three replicas ("no suitable peers for
	// placement"): making the streams is part of what is waited for.
	testutil.Eventually(t, 30*time.Second, "the streams made on three replicas", func() bool {
		return jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects, Replicas: 3}) == nil
	})
	obs, err := js.ObjectStore(ctx, jetlog.BucketSnap)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := obs.Status(ctx); err != nil || st.Replicas() != 3 {
		t.Fatalf("bucket %s: %v replicas (%v), want 3", jetlog.BucketSnap, st, err)
	}
	publish(t, js, history(6, 0, 150))
	a := leadToSnapshot(t, js, c.URLs(), 30)
	a.kill()
	want, _ := rebuild(t, js, testConfig(), nil)
	leader := c.StreamLeader("OBJ_" + jetlog.BucketSnap)
	if leader < 0 {
		t.Fatal("the bucket's stream has no leader")
	}
	c.Stop(leader)
	testutil.Eventually(t, 30*time.Second, "a rebuild from the snapshot without the bucket's leader", func() bool {
		var logs logBuffer
		// Right after the stop the bucket's stream may not answer yet:
		// opening it is part of what is waited for.
		store, err := snapshots.Open(ctx, js, t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			return false
		}
		st, _, err := aggregator.Rebuild(ctx, js, testConfig(), store)
		if err != nil {
			return false
		}
		st.Accepted().(io.Closer).Close()
		return bytes.Equal(st.MarshalSnapshot(nil), want) && strings.Contains(logs.String(), "aggregator snapshot loaded")
	})
}
