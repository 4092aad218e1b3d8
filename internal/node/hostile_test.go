package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// postCarBody posts body to POST /v1/cars and returns the status and answer.
func postCarBody(t *testing.T, n *Node, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+n.HTTPAddr()+"/v1/cars", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("answer %q: %v", data, err)
	}
	return resp.StatusCode, out
}

func inputCount(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	return testutil.Msgs(t, js, jetlog.StreamIn)
}

func eventJSON(t *testing.T, ev *events.CarReplicated) string {
	t.Helper()
	return string(testutil.MustEncode(ev))
}

// Issue 15, findings 1 and 4: a 100 KB car field was answered 422 but
// stored, and its rejection stopped all aggregation; car.bogus, a
// deal.report type, version 2 and fields of the wrong JSON type were
// answered 422 but stored as car.replicated (type and version rewritten)
// or with another reason. Now a refused event is answered and not stored,
// and everything after it is aggregated.
func TestRefusedEventsAreAnsweredNotStoredAndBlockNothing(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	good := testutil.Replicated(1, 1000, true)
	body := func(mut func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(testutil.MustEncode(good), &m); err != nil {
			t.Fatal(err)
		}
		mut(m)
		data, _ := json.Marshal(m)
		return string(bytes.ReplaceAll(data, []byte(`\u003c`), []byte("<")))
	}
	for _, tc := range []struct {
		name, body, reason string
	}{
		{"a car of 100,000 '<'", body(func(m map[string]any) { m["car"] = strings.Repeat("<", 100_000) }), "(100000 bytes)"},
		{"a car of 600 KB of 'x'", body(func(m map[string]any) { m["car"] = strings.Repeat("x", 600_000) }), "more than the 262144"},
		{"type car.bogus", body(func(m map[string]any) { m["type"] = "car.bogus" }), `type "car.bogus"`},
		{"type deal.report", body(func(m map[string]any) { m["type"] = "deal.report" }), `type "deal.report"`},
		{"version 2", body(func(m map[string]any) { m["version"] = 2 }), "version 2"},
		{"a size that is a string", body(func(m map[string]any) { m["size"] = "1000" }), "CarReplicated.size"},
		{"urls that are a string", body(func(m map[string]any) { m["urls"] = "https://a" }), "CarReplicated.urls"},
		{"a CIDv0 for the CAR", body(func(m map[string]any) { m["car"] = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n" }), "CIDv0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := inputCount(t, nt.JS)
			status, ans := postCarBody(t, n, tc.body)
			if status != http.StatusUnprocessableEntity || ans["status"] != "rejected" || !strings.Contains(fmt.Sprint(ans["reason"]), tc.reason) {
				t.Fatalf("answered %d %v, want 422 rejected saying %q", status, ans, tc.reason)
			}
			if len(fmt.Sprint(ans["reason"])) > 600 || len(fmt.Sprint(ans["car"])) > events.MaxCIDText {
				t.Fatalf("the answer repeats the input: %d bytes of reason", len(fmt.Sprint(ans["reason"])))
			}
			if after := inputCount(t, nt.JS); after != before {
				t.Fatalf("a refused event was stored: %d inputs, then %d", before, after)
			}
		})
	}
	if status, ans := postCarBody(t, n, eventJSON(t, good)); status != http.StatusAccepted {
		t.Fatalf("the good event after them: %d %v", status, ans)
	}
	waitIdle(t, n, nt.JS)
	v, err := client.NewHTTP(n.HTTPAddr()).Car(context.Background(), good.Car)
	if err != nil || v.State != aggregator.Aggregating {
		t.Fatalf("good CAR %+v %v", v, err)
	}
	if h := n.health(); h != nil {
		t.Fatalf("health: %v", h)
	}
}

// Issue 15, findings 1 and 2 over NATS: the same 100 KB car published on
// NATS is stored (NATS cannot validate), rejected by the fold in a small
// batch, and the events behind it are aggregated; 600 KB is refused by the
// input log itself.
func TestAHugeInputOnNATSIsRejectedSmallAndBlocksNothing(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	ctx := context.Background()
	good := testutil.Replicated(1, 1000, true)
	subject := jetlog.DefaultSubjects.Input(events.TypeCarReplicated)
	raw := func(car string) []byte {
		return fmt.Appendf(nil, `{"type":"car.replicated","version":1,"car":"%s","size":1000,"md5":%q,"urls":[%q]}`, car, good.MD5, good.URLs[0])
	}
	if _, err := nt.JS.Publish(ctx, subject, raw(strings.Repeat("x", 600_000))); err == nil {
		t.Fatal("the input log stored a 600 KB input")
	}
	ack, err := nt.JS.Publish(ctx, subject, raw(strings.Repeat("<", 100_000)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects).Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, n, nt.JS)
	v, err := client.NewHTTP(n.HTTPAddr()).Car(ctx, good.Car)
	if err != nil || v.State != aggregator.Aggregating {
		t.Fatalf("good CAR %+v %v", v, err)
	}
	found := false
	err = jetlog.Tail(ctx, nt.JS, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		if len(e.Data) > 64<<10 {
			return fmt.Errorf("aggregate log message %d is %d bytes", e.Seq, len(e.Data))
		}
		return events.EachBatch(e.Data, func(b *events.Batch) error {
			found = found || (b.In == ack.Sequence && b.Decisions[len(b.Decisions)-1].Type == events.DecCarRejected)
			return nil
		})
	})
	if err != nil || !found {
		t.Fatalf("rejection of input %d on the log: %v %v", ack.Sequence, found, err)
	}
}

// Issue 15, finding 3: a corrected event one second after a bad one was
// answered duplicate and the CAR stayed REJECTED; a copy of an accepted
// CAR with another size or md5 was answered duplicate too.
func TestACorrectedRetryIsTakenAndAConflictingCopyIsNamed(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	ctx := context.Background()
	good := testutil.Replicated(1, 1000, false)
	bad := *good
	bad.MD5 = "nothex"
	if status, _ := postCarBody(t, n, eventJSON(t, &bad)); status != http.StatusUnprocessableEntity {
		t.Fatalf("bad md5: %d", status)
	}
	// Over NATS too, inside the duplicate window: its message id carries
	// the content's digest.
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	badNATS := testutil.Replicated(2, 1000, false)
	goodNATS := *badNATS
	badNATS.MD5 = "nothex"
	if p, err := pub.Publish(ctx, badNATS); err != nil || p.Duplicate {
		t.Fatal(p, err)
	}
	if status, ans := postCarBody(t, n, eventJSON(t, good)); status != http.StatusAccepted {
		t.Fatalf("the corrected event: %d %v", status, ans)
	}
	if p, err := pub.Publish(ctx, &goodNATS); err != nil || p.Duplicate {
		t.Fatalf("the corrected event on NATS: %+v %v", p, err)
	}
	waitIdle(t, n, nt.JS)
	api := client.NewHTTP(n.HTTPAddr())
	for _, car := range []string{good.Car, goodNATS.Car} {
		if v, err := api.Car(ctx, car); err != nil || v.State != aggregator.Queued {
			t.Fatalf("corrected CAR %s: %+v %v", car, v, err)
		}
	}
	if status, ans := postCarBody(t, n, eventJSON(t, good)); status != http.StatusOK || ans["status"] != "duplicate" {
		t.Fatalf("the same copy again: %d %v", status, ans)
	}
	other := *good
	other.Size, other.MD5 = 2000, "ffffffffffffffffffffffffffffffff"
	before := inputCount(t, nt.JS)
	status, ans := postCarBody(t, n, eventJSON(t, &other))
	if reason := fmt.Sprint(ans["reason"]); status != http.StatusConflict || ans["status"] != "conflict" ||
		!strings.Contains(reason, "size 2000, the accepted copy's 1000") || !strings.Contains(reason, "md5 ffff") {
		t.Fatalf("a conflicting copy: %d %v", status, ans)
	}
	if inputCount(t, nt.JS) != before+1 {
		t.Fatal("the conflict is not on the record")
	}
	waitIdle(t, n, nt.JS)
	var recorded bool
	_ = jetlog.Tail(ctx, nt.JS, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		return events.EachBatch(e.Data, func(b *events.Batch) error {
			for _, d := range b.Decisions {
				recorded = recorded || (d.Car == good.Car && d.Reason == events.ReasonConflict)
			}
			return nil
		})
	})
	if !recorded {
		t.Fatal("the fold did not record the conflict")
	}
	if v, _ := api.Car(ctx, good.Car); v.Size != 1000 || v.MD5 != good.MD5 {
		t.Fatalf("the accepted copy did not stand: %+v", v)
	}
}

// Issue 15, finding 9: a serve without --deal-size on an 8 MiB log ran
// under 32 GiB; a replay without the right --deal-size deleted the read
// models and then failed.
func TestTheLogsSettingsDecideAndAFlagThatDisagreesIsRefused(t *testing.T) {
	dir := t.TempDir()
	nt := testutil.StartNATS(t)
	cfg := testConfig(dir, nt.URL())
	n := startNode(t, cfg)
	if _, err := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects).Publish(context.Background(), testutil.Replicated(1, 1000, true)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, n, nt.JS)
	n.Close()

	// No flags given: the log's settings, whatever the defaults.
	second := testConfig(dir, nt.URL())
	second.Fold = events.Settings{DealSize: 32 << 30, MinPayload: 7, MaxWait: time.Minute}
	n2, err := Start(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	if got := n2.Settings(); got != cfg.Fold {
		t.Fatalf("settings %+v, want the log's %+v", got, cfg.Fold)
	}
	n2.Close()

	// A deal size given that disagrees: refused, with both values.
	second.FoldGiven = map[string]bool{"dealSize": true}
	if _, err := Start(context.Background(), second); !errors.Is(err, aggregator.ErrSettings) ||
		!strings.Contains(err.Error(), fmt.Sprintf("dealSize %d (the log's: %d)", 32<<30, testDeal)) {
		t.Fatalf("a deal size that disagrees with the log: %v", err)
	}
}
