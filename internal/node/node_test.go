package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multibase"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const testDeal = 1 << 20

func testConfig(dir, natsURL string) Config {
	return Config{
		Data: dir, HTTP: "127.0.0.1:0", NATSListen: "127.0.0.1:0", NATS: natsURL,
		Fold: events.Settings{DealSize: testDeal, MinPayload: aggregator.DefaultMinPayload(testDeal), MaxWait: time.Hour},
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	n.Run(context.Background())
	t.Cleanup(func() { n.Close() })
	return n
}

// waitIdle waits until the projection has applied the whole aggregate log
// and the aggregator has read the whole input log.
func waitIdle(t *testing.T, n *Node, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	testutil.Eventually(t, 30*time.Second, "aggregator and projection to catch up", func() bool {
		in, agg, ok := logEnds(ctx, js)
		return ok && n.Runner.Status().Leader && n.Projector.Seq() == agg && lastInputSeen(t, js, agg) >= lastDecisive(in)
	})
}

// logEnds is the last sequence of the input log and of the aggregate log.
func logEnds(ctx context.Context, js jetstream.JetStream) (in, agg uint64, ok bool) {
	for _, s := range []struct {
		name string
		seq  *uint64
	}{{jetlog.StreamIn, &in}, {jetlog.StreamAgg, &agg}} {
		st, err := js.Stream(ctx, s.name)
		if err != nil {
			return 0, 0, false
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, 0, false
		}
		*s.seq = info.State.LastSeq
	}
	return in, agg, true
}

// lastInputSeen is the input sequence named by the last aggregate log
// message.
func lastInputSeen(t *testing.T, js jetstream.JetStream, aggSeq uint64) uint64 {
	if aggSeq == 0 {
		return 0
	}
	st, _ := js.Stream(context.Background(), jetlog.StreamAgg)
	m, err := st.GetMsg(context.Background(), aggSeq)
	if err != nil {
		return 0
	}
	var in uint64
	_ = events.EachBatch(m.Data, func(b *events.Batch) error {
		in = b.In
		return nil
	})
	return in
}

// lastDecisive: every input in these tests causes a decision (no ticks).
func lastDecisive(seq uint64) uint64 { return seq }

func TestCarsFlowIntoAggregatesWhosePieceCIDsAndProofsVerify(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	ctx := context.Background()
	var cars []testutil.CAR
	for i := range 120 {
		cars = append(cars, testutil.MakeCAR(t, uint64(i), 1000+i*397%60000))
	}
	// Half over NATS, half over HTTP; a few bad ones in between.
	api := client.NewHTTP(n.HTTPAddr())
	var httpEvs []*events.CarReplicated
	for i, c := range cars {
		ev := c.Event("https://carpark.example", true)
		if i%2 == 0 {
			if _, err := pub.Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
		} else {
			httpEvs = append(httpEvs, ev)
		}
	}
	bad := testutil.Replicated(9999, 1000, true)
	bad.MD5 = "nothex"
	// The same mistake over NATS is stored, and the fold rejects it.
	badNATS := testutil.Replicated(9998, 1000, true)
	badNATS.MD5 = "nothex"
	if _, err := pub.Publish(ctx, badNATS); err != nil {
		t.Fatal(err)
	}
	res, err := api.Submit(ctx, append(httpEvs, bad))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res[:len(res)-1] {
		if r.Status != "accepted" {
			t.Fatalf("HTTP submit: %+v", r)
		}
	}
	if last := res[len(res)-1]; last.Status != "rejected" || !strings.Contains(last.Reason, "md5") {
		t.Fatalf("bad event answered %+v", last)
	}
	// Duplicates by HTTP and NATS change nothing.
	if res, _ := api.Submit(ctx, []*events.CarReplicated{cars[1].Event("https://x.example", true)}); res[0].Status != "duplicate" {
		t.Fatalf("duplicate answered %+v", res[0])
	}
	waitIdle(t, n, nt.JS)
	closeIngesting(t, n, api)
	waitIdle(t, n, nt.JS)

	verifyAll(t, api, cars)
	if v, err := api.Car(ctx, badNATS.Car); err != nil || v.State != aggregator.Rejected || !strings.Contains(v.Reason, "md5") {
		t.Fatalf("bad CAR status %+v %v", v, err)
	}
	// Refused over HTTP: answered, not stored, so the CAR is unknown.
	if v, err := api.Car(ctx, bad.Car); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("CAR refused over HTTP: status %+v %v, want not found", v, err)
	}
	checkLogs(t, nt.JS, testDeal)
}

// closeIngesting force-closes the INGESTING aggregate, if any.
func closeIngesting(t *testing.T, n *Node, api *client.HTTP) {
	t.Helper()
	page, err := api.Aggregates(context.Background(), aggregator.Ingesting, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range page.Aggregates {
		if err := api.CloseAggregate(context.Background(), a.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// verifyAll checks every CAR against independent computation: each
// aggregate's piece CID is what go-data-segment builds from the layout the
// API reports, the layout is largest first, and every CAR's inclusion
// proof verifies with go-data-segment's verifier for the CAR's own commP.
func verifyAll(t *testing.T, api *client.HTTP, cars []testutil.CAR) {
	t.Helper()
	ctx := context.Background()
	aggs := map[uint64]bool{}
	for _, c := range cars {
		v, err := api.Car(ctx, c.CID.String())
		if err != nil {
			t.Fatalf("status of %s: %v", c.CID, err)
		}
		if v.State != aggregator.Ready || v.Inclusion == nil || v.Aggregate == 0 {
			t.Fatalf("CAR %s: %+v", c.CID, v)
		}
		if v.Piece != c.Piece.MustV2().String() || v.Size != uint64(len(c.Bytes)) || v.MD5 != c.MD5 {
			t.Fatalf("CAR %s facts differ: %+v", c.CID, v)
		}
		agg, err := api.Aggregate(ctx, fmt.Sprint(v.Aggregate), -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		verifyProof(t, v.Inclusion.CBOR, c.Piece, agg.PieceV1)
		aggs[v.Aggregate] = true
	}
	for id := range aggs {
		verifyAggregate(t, api, id)
	}
}

func verifyProof(t *testing.T, enc []byte, p piece.Commitment, aggPieceV1 string) {
	t.Helper()
	var proof datasegment.InclusionProof
	if err := proof.UnmarshalCBOR(bytes.NewReader(enc)); err != nil {
		t.Fatal(err)
	}
	aux, err := proof.ComputeExpectedAuxData(datasegment.InclusionVerifierData{CommPc: p.V1(), SizePc: abi.PaddedPieceSize(p.Padded)})
	if err != nil {
		t.Fatalf("proof does not verify: %v", err)
	}
	if aux.CommPa.String() != aggPieceV1 || uint64(aux.SizePa) != testDeal {
		t.Fatalf("proof leads to %s/%d, aggregate is %s/%d", aux.CommPa, aux.SizePa, aggPieceV1, testDeal)
	}
}

func verifyAggregate(t *testing.T, api *client.HTTP, id uint64) {
	t.Helper()
	a, err := api.Aggregate(context.Background(), fmt.Sprint(id), -1, 100000)
	if err != nil {
		t.Fatal(err)
	}
	infos := make([]abi.PieceInfo, len(a.Pieces))
	for i, p := range a.Pieces {
		c, err := cid.Decode(p.Piece)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := piece.FromCID(c, 0)
		if err != nil {
			t.Fatal(err)
		}
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(pc.Padded), PieceCID: pc.V1()}
	}
	if !slices.IsSortedFunc(infos, func(x, y abi.PieceInfo) int { return int(y.Size>>7) - int(x.Size>>7) }) {
		t.Fatalf("aggregate %d layout is not largest first", id)
	}
	ds, err := datasegment.NewAggregate(testDeal, infos)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ds.PieceCID()
	if a.PieceV1 != want.String() || a.Count != len(a.Pieces) {
		t.Fatalf("aggregate %d: piece %s count %d, go-data-segment says %s for %d pieces", id, a.PieceV1, a.Count, want, len(a.Pieces))
	}
	for i, e := range ds.Index.Entries {
		if a.Pieces[i].Offset == nil || *a.Pieces[i].Offset != e.Offset {
			t.Fatalf("aggregate %d piece %d offset %v, go-data-segment says %d", id, i, a.Pieces[i].Offset, e.Offset)
		}
	}
}

// checkLogs refolds the whole input log into a fresh state and requires the
// aggregate log byte for byte: its messages, cut where the runner cut them,
// are the refold's batches joined by newlines. Then it checks the model's
// invariants on it, and the runner's grouping rule: a batch that makes
// deals is a message of its own on the deals subject, and only such
// messages are. It returns the number of messages and of batches.
func checkLogs(t *testing.T, js jetstream.JetStream, deal uint64) (msgs, batches int) {
	t.Helper()
	return checkLogsUnder(t, js, events.Settings{DealSize: deal, MinPayload: aggregator.DefaultMinPayload(deal), MaxWait: time.Hour})
}

// checkLogsUnder is checkLogs for a node whose fold runs under cfg.
func checkLogsUnder(t *testing.T, js jetstream.JetStream, cfg events.Settings) (msgs, batches int) {
	t.Helper()
	ctx := context.Background()
	// The log's own settings, as every refold takes them.
	logged, err := aggregator.LogSettings(ctx, js)
	if err != nil || logged == nil || logged.DealSize != cfg.DealSize {
		t.Fatalf("the aggregate log records settings %+v (%v), want a deal size of %d", logged, err, cfg.DealSize)
	}
	deal := cfg.DealSize
	st := aggregator.New(*logged)
	var want [][]byte
	err = jetlog.Tail(ctx, js, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		if b := st.ApplyInput(aggregator.Input{Seq: e.Seq, Data: e.Data, Stored: e.Time}); len(b.Decisions) > 0 {
			data, err := json.Marshal(b)
			want = append(want, data)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m := aggregator.NewInvariantModel()
	i := 0
	err = jetlog.Tail(ctx, js, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		k := bytes.Count(e.Data, []byte("\n")) + 1
		if i+k > len(want) || !bytes.Equal(e.Data, bytes.Join(want[i:i+k], []byte("\n"))) {
			return fmt.Errorf("aggregate log message %d differs from the refold", e.Seq)
		}
		deals := false
		for _, data := range want[i : i+k] {
			var b events.Batch
			if err := json.Unmarshal(data, &b); err != nil {
				return err
			}
			for _, d := range b.Decisions {
				deals = deals || d.Type == events.DecAggDeals
			}
			if err := m.Apply(b); err != nil {
				return err
			}
		}
		if deals && k != 1 {
			return fmt.Errorf("aggregate log message %d groups a batch that makes deals with %d others", e.Seq, k-1)
		}
		if onDeals := e.Msg.Subject() == jetlog.DefaultSubjects.Deals(); onDeals != deals {
			return fmt.Errorf("aggregate log message %d on %s, makes deals: %v", e.Seq, e.Msg.Subject(), deals)
		}
		i += k
		msgs++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != len(want) {
		t.Fatalf("aggregate log has %d messages, the refold %d", i, len(want))
	}
	if err := m.Check(deal); err != nil {
		t.Fatal(err)
	}
	return msgs, i
}

func TestRestartsDuringBulkIngestLoseAndDoubleNothing(t *testing.T) {
	nt := testutil.StartNATS(t)
	dir := t.TempDir()
	const total = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, js := testutil.Connect(t, nt.URL())
		pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
		for i := range total {
			if _, err := pub.PublishAsync(testutil.Replicated(i, 1+uint64(i*7919%30000), true)); err != nil {
				t.Error(err)
				return
			}
		}
		<-js.PublishAsyncComplete()
	}()
	for range 4 {
		n := startNode(t, testConfig(dir, nt.URL()))
		time.Sleep(150 * time.Millisecond)
		if err := n.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	wg.Wait()
	n := startNode(t, testConfig(dir, nt.URL()))
	waitIdle(t, n, nt.JS)
	api := client.NewHTTP(n.HTTPAddr())
	for i := range total {
		c := testutil.CarCID(i).String()
		v, err := api.Car(context.Background(), c)
		if err != nil || (v.State != aggregator.Aggregating && v.State != aggregator.Ready) {
			t.Fatalf("CAR %d: %+v %v", i, v, err)
		}
	}
	// The burst is grouped: several batches per message (so the refold
	// above held for grouped messages, not only for one batch each).
	if msgs, batches := checkLogs(t, nt.JS, testDeal); msgs >= batches {
		t.Fatalf("aggregate log holds %d batches in %d messages: a burst of %d inputs was not grouped", batches, msgs, total)
	} else {
		t.Logf("aggregate log: %d batches in %d messages", batches, msgs)
	}
}

func TestASecondAggregatorWaitsAndARogueAppendDeposesTheWriter(t *testing.T) {
	nt := testutil.StartNATS(t)
	a := startNode(t, testConfig(t.TempDir(), nt.URL()))
	testutil.Eventually(t, 10*time.Second, "first aggregator to lead", func() bool { return a.Runner.Status().Leader })
	b := startNode(t, testConfig(t.TempDir(), nt.URL()))
	time.Sleep(300 * time.Millisecond)
	if b.Runner.Status().Leader {
		t.Fatal("two aggregators lead at once")
	}
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	ctx := context.Background()
	for i := range 50 {
		if _, err := pub.Publish(ctx, testutil.Replicated(i, 5000, true)); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, a, nt.JS)
	// A writer that ignores the lease appends behind the leader's back: the
	// leader's next append must fail and it must step down, not interleave.
	rogue, _ := json.Marshal(events.Batch{Decisions: []events.Decision{{Type: events.DecInputIgnored, Reason: "rogue"}}})
	if _, err := nt.JS.Publish(ctx, jetlog.DefaultSubjects.Decisions(), rogue); err != nil {
		t.Fatal(err)
	}
	for i := 50; i < 100; i++ {
		if _, err := pub.Publish(ctx, testutil.Replicated(i, 5000, true)); err != nil {
			t.Fatal(err)
		}
	}
	// Stop the first; the second takes over after the lease is released.
	a.Close()
	testutil.Eventually(t, 20*time.Second, "second aggregator to lead", func() bool { return b.Runner.Status().Leader })
	waitIdle(t, b, nt.JS)
	m := aggregator.NewInvariantModel()
	if err := client.Replay(ctx, nt.JS, 1, func(_ uint64, batch events.Batch) error { return m.Apply(batch) }); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(testDeal); err != nil {
		t.Fatal(err)
	}
	if got := m.Cars(); got != 100 {
		t.Fatalf("log holds %d CARs, want 100", got)
	}
}

func TestHTTPErrorsAreJSONWithTheRightStatus(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	base := "http://" + n.HTTPAddr()
	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"an unknown CID is 404", "GET", "/v1/cars/" + testutil.CarCID(1).String(), "", 404, "not found"},
		{"a malformed CID is 400", "GET", "/v1/cars/notacid", "", 400, "not a CID"},
		{"an unknown aggregate is 404", "GET", "/v1/aggregates/77", "", 404, "not found"},
		{"a bad aggregate reference is 400", "GET", "/v1/aggregates/xyz", "", 400, "neither"},
		{"a bad state filter is 400", "GET", "/v1/aggregates?state=SAILING", "", 400, "not an aggregate state"},
		{"an empty body is 400", "POST", "/v1/cars", "", 400, "empty body"},
		{"a body that is not JSON is 400", "POST", "/v1/cars", "hello", 400, "not a JSON"},
		{"an invalid event is 422 with the reason", "POST", "/v1/cars", `{"car":"x","size":1}`, 422, "car:"},
		{"reports without a configured token are refused", "POST", "/v1/deals/report", `{}`, 403, "disabled"},
		{"closing an unknown aggregate is 404", "POST", "/v1/aggregates/5/close", "", 404, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			text := fmt.Sprint(body["error"], body["reason"])
			if resp.StatusCode != tc.status || !strings.Contains(text, tc.msg) {
				t.Fatalf("got %d %v, want %d mentioning %q", resp.StatusCode, body, tc.status, tc.msg)
			}
		})
	}
}

var (
	_ = httptest.NewServer
	_ = nats.Connect
)

// TestACarIsFoundByAnyEncodingOfItsCID: the status API answers for a CAR
// asked by its canonical CID (base32 CIDv1, which takes a path without
// go-cid) and by the same CID in other multibases (which go through
// go-cid), always naming it in canonical form.
func TestACarIsFoundByAnyEncodingOfItsCID(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	ev := testutil.Replicated(7, 5000, true)
	if _, err := pub.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, n, nt.JS)
	c, err := cid.Decode(ev.Car)
	if err != nil {
		t.Fatal(err)
	}
	b58, err := c.StringOfBase(multibase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	b36, err := c.StringOfBase(multibase.Base36)
	if err != nil {
		t.Fatal(err)
	}
	var answers []string
	for _, asked := range []string{ev.Car, b58, b36} {
		if asked != ev.Car && strings.HasPrefix(asked, "b") {
			t.Fatalf("%q is not another encoding", asked)
		}
		resp, err := http.Get("http://" + n.HTTPAddr() + "/v1/cars/" + asked)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s %v", asked, resp.StatusCode, body, err)
		}
		var v struct{ Car string }
		if err := json.Unmarshal(body, &v); err != nil || v.Car != c.String() {
			t.Fatalf("GET %s answered for %q (%v), want %s", asked, v.Car, err, c)
		}
		answers = append(answers, string(body))
	}
	if answers[1] != answers[0] || answers[2] != answers[0] {
		t.Fatalf("answers differ by encoding asked:\n%s\n%s\n%s", answers[0], answers[1], answers[2])
	}
}
