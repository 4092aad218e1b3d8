package node

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/fetch"
	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	car "github.com/ipld/go-car/v2"
	"github.com/nats-io/nats.go/jetstream"
)

// loopback lets fetch workers reach the tests' gateways on 127.0.0.1.
var loopback = urlpolicy.New(urlpolicy.Config{AllowPrivate: true})

// withFetch gives a node fetch workers on gateways with short limits: a
// source's fetch bounded by timeout (and a not-found CID failed after
// it), retries 100 ms apart, an item lost to another worker after a
// second of silence.
func withFetch(timeout time.Duration, maxDeliver int, gateways ...string) func(*Config) {
	return func(c *Config) {
		c.Fetch = FetchConfig{
			Fetch:      fetch.Config{Gateways: gateways, Policy: loopback, Timeout: timeout, StallTimeout: time.Second},
			MaxDeliver: maxDeliver, Backoff: []time.Duration{100 * time.Millisecond}, AckWait: time.Second,
		}
	}
}

// pinLog is what the input log says about fetches.
type pinLog struct {
	fetching   []*events.PinFetching
	fetched    []*events.PinFetched
	failed     []*events.PinFailed
	replicated []*events.CarReplicated
}

func readPinLog(t *testing.T, js jetstream.JetStream) pinLog {
	t.Helper()
	var l pinLog
	for _, ev := range testutil.Inputs(t, js) {
		switch ev := ev.(type) {
		case *events.PinFetching:
			l.fetching = append(l.fetching, ev)
		case *events.PinFetched:
			l.fetched = append(l.fetched, ev)
		case *events.PinFailed:
			l.failed = append(l.failed, ev)
		case *events.CarReplicated:
			l.replicated = append(l.replicated, ev)
		}
	}
	return l
}

// spooled lists the spool files of the node's CAR store.
func spooled(t *testing.T, n *Node) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.carDir(), ".spool"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func enqueueFetch(t *testing.T, n *Node, root string) {
	t.Helper()
	if err := n.EnqueueFetch(context.Background(), fetchworker.Item{CID: root, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// TestAFetchedPinIsStoredServedAndDealt: a UnixFS file served by boxo's
// gateway is fetched into the CAR store, whose bytes hold the importer's
// DAG and whose CAR CID, md5 and piece (go-fil-commp-hashhash) are those
// car.replicated and pin.fetched name; /cars/ serves it; the CAR is
// aggregated and dealt with the simulator, and GET /v1/cars answers.
func TestAFetchedPinIsStoredServedAndDealt(t *testing.T) {
	store := ipfstest.NewStore()
	dag := store.File(t, ipfstest.Bytes(7, 150<<10), ipfstest.FileOptions{ChunkSize: 16 << 10, MaxLinks: 4})
	gw := ipfstest.NewGateway(t, store)
	d := startDealsOn(t, "", 0, spade.SimConfig{Delay: 5 * time.Millisecond}, "", withFetch(10*time.Second, 3, gw.URL))
	enqueueFetch(t, d.n, dag.Root.String())
	var l pinLog
	testutil.Eventually(t, 30*time.Second, "pin.fetched", func() bool { l = readPinLog(t, d.n.JS); return len(l.fetched) > 0 })
	if len(l.fetched) != 1 || len(l.replicated) != 1 || len(l.failed) != 0 || len(l.fetching) != 1 {
		t.Fatalf("pin log %+v, want one attempt, one car.replicated, one pin.fetched", l)
	}
	got, rep := l.fetched[0], l.replicated[0]
	data, err := os.ReadFile(filepath.Join(d.n.carDir(), got.Car+".car"))
	if err != nil {
		t.Fatalf("the CAR is not in the store: %v", err)
	}
	want, err := testutil.DescribeCAR(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.CID != dag.Root.String() || got.Car != want.CID.String() || got.Size != uint64(len(data)) || got.Piece != want.Piece.MustV2().String() {
		t.Fatalf("pin.fetched %+v; the stored CAR is %s, %d bytes, piece %s", got, want.CID, len(data), want.Piece.MustV2())
	}
	if rep.Car != got.Car || rep.MD5 != want.MD5 || rep.Piece != got.Piece || rep.Size != got.Size ||
		len(rep.URLs) != 1 || rep.URLs[0] != "http://"+d.n.HTTPAddr()+"/cars/"+got.Car+".car" {
		t.Fatalf("car.replicated %+v, want the stored CAR's facts and its URL under /cars/", rep)
	}
	// The CAR holds the importer's DAG under its root, every block once.
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || !br.Roots[0].Equals(dag.Root) {
		t.Fatalf("roots %v, want %s", br.Roots, dag.Root)
	}
	seen := map[string]bool{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := dag.Block(b.Cid()); want == nil || !bytes.Equal(want.RawData(), b.RawData()) || seen[b.Cid().KeyString()] {
			t.Fatalf("block %s is not the importer's, or repeats", b.Cid())
		}
		seen[b.Cid().KeyString()] = true
	}
	if len(seen) != len(dag.Blocks) {
		t.Fatalf("%d blocks in the CAR, the importer made %d", len(seen), len(dag.Blocks))
	}
	resp, err := http.Get(rep.URLs[0])
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(served, data) {
		t.Fatalf("GET %s: %s, %d bytes, want the stored CAR", rep.URLs[0], resp.Status, len(served))
	}
	d.cars = append(d.cars, want)
	d.waitProcessed(t, 60*time.Second)
	v, err := d.api.Car(context.Background(), got.Car)
	if err != nil || v.Piece != got.Piece {
		t.Fatalf("GET /v1/cars/%s: %+v %v", got.Car, v, err)
	}
	if n := len(spooled(t, d.n)); n != 0 {
		t.Fatalf("%d spool files left", n)
	}
}

// stallingGateway serves a 150 KiB file of seed that stalls after 40 KiB,
// and a node config that fetches from it.
func stallingGateway(t *testing.T, seed uint64) (*ipfstest.DAG, *ipfstest.Gateway, Config) {
	store := ipfstest.NewStore()
	dag := store.File(t, ipfstest.Bytes(seed, 150<<10), ipfstest.FileOptions{ChunkSize: 16 << 10})
	gw := ipfstest.NewGateway(t, store)
	gw.StallAfter(40 << 10)
	cfg := testConfig(t.TempDir(), "")
	withFetch(time.Minute, 3, gw.URL)(&cfg)
	return dag, gw, cfg
}

// TestACancelledFetchStopsAndLeavesNoSpoolFile: a gateway that stalls
// mid-stream holds a fetch; cancelling it ends the fetch at once, removes
// its spool file, takes the item off the queue, and fails nothing.
func TestACancelledFetchStopsAndLeavesNoSpoolFile(t *testing.T) {
	dag, gw, cfg := stallingGateway(t, 8)
	cfg.Fetch.AckWait = time.Minute // the stall must not hand the item to another worker
	n := startNode(t, cfg)
	enqueueFetch(t, n, dag.Root.String())
	testutil.Eventually(t, 20*time.Second, "a fetch stalled with a spool file", func() bool {
		return len(readPinLog(t, n.JS).fetching) == 1 && len(spooled(t, n)) == 1 && gw.Requests.Load() > 0
	})
	if err := n.CancelFetch(context.Background(), dag.Root.String()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the spool file gone and the item acknowledged", func() bool {
		if len(spooled(t, n)) != 0 {
			return false
		}
		c, err := n.JS.Consumer(context.Background(), jetlog.StreamFetch, jetlog.FetchConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if got := testutil.Msgs(t, n.JS, jetlog.StreamFetch); got != 0 {
		t.Fatalf("%d items on the queue after the cancel", got)
	}
	l := readPinLog(t, n.JS)
	if len(l.failed) != 0 || len(l.fetched) != 0 || len(l.replicated) != 0 || len(l.fetching) != 1 {
		t.Fatalf("pin log after a cancel: %+v, want the one attempt and nothing else", l)
	}
	if entries, _ := os.ReadDir(n.carDir()); len(entries) != 1 { // .spool only
		t.Fatalf("the CAR store holds %d entries after a cancelled fetch", len(entries))
	}
}

// TestAWorkerKilledMidFetchLosesItToAnother: a worker stopped while the
// gateway stalls leaves the item unacknowledged; a second worker takes it
// after the ack wait and finishes it, and the CAR is stored and
// published once.
func TestAWorkerKilledMidFetchLosesItToAnother(t *testing.T) {
	dag, gw, cfg := stallingGateway(t, 9)
	fc := cfg.Fetch
	cfg.Fetch.Workers = -1 // the test runs the workers
	n := startNode(t, cfg)
	fc.Workers, fc.Fetch.Store = 1, n.Cars
	first, kill := context.WithCancel(context.Background())
	defer kill()
	done := make(chan error, 1)
	go func() { done <- FetchPool(n.JS, jetlog.DefaultSubjects, fc, n.log).Run(first) }()
	enqueueFetch(t, n, dag.Root.String())
	testutil.Eventually(t, 20*time.Second, "the first worker fetching", func() bool { return len(spooled(t, n)) == 1 })
	kill()
	<-done
	gw.StallAfter(0)
	second, stop := context.WithCancel(context.Background())
	defer stop()
	go FetchPool(n.JS, jetlog.DefaultSubjects, fc, n.log).Run(second)
	var l pinLog
	testutil.Eventually(t, 30*time.Second, "the second worker's pin.fetched", func() bool {
		l = readPinLog(t, n.JS)
		return len(l.fetched) > 0
	})
	if len(l.replicated) != 1 || len(l.fetched) != 1 || len(l.fetching) != 2 || l.fetching[1].Attempt != 2 {
		t.Fatalf("pin log %+v, want attempts 1 and 2 and one car.replicated", l)
	}
	entries, err := os.ReadDir(n.carDir())
	if err != nil {
		t.Fatal(err)
	}
	var cars []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".car") {
			cars = append(cars, e.Name())
		}
	}
	if len(cars) != 1 || cars[0] != l.fetched[0].Car+".car" || len(spooled(t, n)) != 0 {
		t.Fatalf("store holds %v and %d spool files, want %s.car alone", cars, len(spooled(t, n)), l.fetched[0].Car)
	}
}

// TestFetchFailures: a CID no source has fails "not found at any source"
// once the timeout has passed since it was requested; a DAG over the size
// limit fails at once, on its first attempt.
func TestFetchFailures(t *testing.T) {
	store := ipfstest.NewStore()
	big := store.File(t, ipfstest.Bytes(10, 300<<10), ipfstest.FileOptions{ChunkSize: 16 << 10})
	absent := ipfstest.NewStore().File(t, ipfstest.Bytes(11, 1<<10), ipfstest.FileOptions{})
	gw := ipfstest.NewGateway(t, store)
	cfg := testConfig(t.TempDir(), "")
	withFetch(2*time.Second, 3, gw.URL)(&cfg)
	cfg.Fetch.Fetch.MaxSize = 100 << 10
	n := startNode(t, cfg)
	requested := time.Now()
	enqueueFetch(t, n, absent.Root.String())
	enqueueFetch(t, n, big.Root.String())
	failed := map[string]*events.PinFailed{}
	testutil.Eventually(t, 30*time.Second, "both pins failed", func() bool {
		for _, f := range readPinLog(t, n.JS).failed {
			failed[f.CID] = f
		}
		return len(failed) == 2
	})
	if f := failed[absent.Root.String()]; !strings.HasPrefix(f.Reason, "not found at any source") || f.At.Sub(requested) < 2*time.Second {
		t.Fatalf("absent CID: %+v, want not found after the 2s timeout", f)
	}
	if f := failed[big.Root.String()]; !strings.Contains(f.Reason, "too large") {
		t.Fatalf("large DAG: %+v, want too large", f)
	}
	attempts := map[string]int{}
	for _, f := range readPinLog(t, n.JS).fetching {
		attempts[f.CID]++
	}
	if attempts[big.Root.String()] != 1 || attempts[absent.Root.String()] < 2 {
		t.Fatalf("attempts %v: the large DAG once, the absent one until its deadline", attempts)
	}
	if letters, err := fetchworker.DeadLetters(context.Background(), n.JS, jetlog.DefaultSubjects, ""); err != nil || len(letters) != 0 {
		t.Fatalf("dead letters %+v %v: neither failure is retried to the end", letters, err)
	}
}
