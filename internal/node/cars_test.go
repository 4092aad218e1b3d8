package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
)

// postCars posts evs as an array and returns the status and the results.
func postCars(t *testing.T, base string, evs ...*events.CarReplicated) (int, []wire.CarResult) {
	t.Helper()
	var raws []json.RawMessage
	for _, ev := range evs {
		raws = append(raws, testutil.MustEncode(ev))
	}
	body, err := json.Marshal(raws)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/v1/cars", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Results []wire.CarResult `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	if len(out.Results) != len(evs) {
		t.Fatalf("%d results for %d events", len(out.Results), len(evs))
	}
	return resp.StatusCode, out.Results
}

// Issue 19: with the input log unavailable an array of POST /v1/cars was
// answered 200 with every result "error", and a producer that reads only
// the status took it as done. Nothing stored is 503; what the array held
// that needs no store (a duplicate) does not make it 200.
func TestCarsOfWhichNothingWasStoredAreAnswered503(t *testing.T) {
	n := startNode(t, testConfig(t.TempDir(), ""))
	base := "http://" + n.HTTPAddr()
	api := client.NewHTTP(n.HTTPAddr())
	ctx := context.Background()

	first := testutil.Replicated(1, 1000, true)
	if code, res := postCars(t, base, first); code != http.StatusOK || res[0].Status != wire.Accepted || res[0].Seq == 0 {
		t.Fatalf("with the input log up: %d %+v", code, res)
	}
	testutil.Eventually(t, 10*time.Second, "the first CAR to be aggregated", func() bool {
		v, err := api.Car(ctx, first.Car)
		return err == nil && v.State == aggregator.Aggregating
	})

	// The input log goes away, as when its stream has no leader: a
	// publish to it finds no stream.
	admin, err := n.Creds.Option(natsembed.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	_, js := testutil.Connect(t, n.NATSURL(), admin)
	if err := js.DeleteStream(ctx, jetlog.StreamIn); err != nil {
		t.Fatal(err)
	}

	second, third := testutil.Replicated(2, 1000, true), testutil.Replicated(3, 1000, true)
	code, res := postCars(t, base, second, third)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("nothing stored: answered %d %+v, want 503", code, res)
	}
	for i, r := range res {
		if r.Status != wire.Failed || r.Seq != 0 || r.Reason == "" {
			t.Fatalf("result %d: %+v, want error with a reason", i, r)
		}
	}
	// A duplicate beside the failure: still nothing stored.
	code, res = postCars(t, base, first, second)
	if code != http.StatusServiceUnavailable || res[0].Status != wire.Duplicate || res[1].Status != wire.Failed {
		t.Fatalf("a duplicate and a failure: %d %+v, want 503 [duplicate error]", code, res)
	}
	// Only a duplicate: nothing failed, 200.
	if code, res := postCars(t, base, first); code != http.StatusOK || res[0].Status != wire.Duplicate {
		t.Fatalf("a duplicate alone: %d %+v, want 200 duplicate", code, res)
	}
	// The client says so as an error.
	_, err = api.Submit(ctx, []*events.CarReplicated{second, third})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || !strings.Contains(apiErr.Message, "nothing of the 2 events was stored") {
		t.Fatalf("client: %v, want a 503 APIError saying nothing was stored", err)
	}
	t.Logf("answered: %d, %q", code, res[1].Reason)
}
