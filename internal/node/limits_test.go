package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
)

// post sends body to ferry with a bearer token and returns the status and
// the answer.
func post(t *testing.T, n *Node, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+n.HTTPAddr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// readyAggregate publishes cars CARs with their pieces, closes the
// aggregate they went into and waits until the read models show it READY.
func readyAggregate(t *testing.T, n *Node, nt *testutil.NATS, writeToken string, cars int) *wire.AggregateView {
	t.Helper()
	ctx := context.Background()
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	first := testutil.Replicated(7000, 3000, true)
	for i := range cars {
		if _, err := pub.Publish(ctx, testutil.Replicated(7000+i, 3000, true)); err != nil {
			t.Fatal(err)
		}
	}
	api := client.NewHTTP(n.HTTPAddr())
	api.Token = writeToken
	var v *wire.CarView
	testutil.Eventually(t, 20*time.Second, "the CARs to be aggregated", func() bool {
		var err error
		v, err = api.Car(ctx, first.Car)
		return err == nil && v.State == aggregator.Aggregating
	})
	if err := api.CloseAggregate(ctx, v.Aggregate); err != nil {
		t.Fatal(err)
	}
	var agg *wire.AggregateView
	testutil.Eventually(t, 20*time.Second, "the aggregate to be READY", func() bool {
		agg, _ = api.Aggregate(ctx, fmt.Sprint(v.Aggregate), -1, 0)
		return agg != nil && agg.State == aggregator.Ready
	})
	return agg
}

// slowBody is a client sending a POST body of declared length at one byte
// a second, as the slow-body attack did; status gets the answer's status
// (0 if the connection ended without one).
type slowBody struct {
	conn   net.Conn
	status chan int
}

func startSlowBody(t *testing.T, addr, path, token string) *slowBody {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &slowBody{conn: conn, status: make(chan int, 1)}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: ferry\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[", path, token)
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			time.Sleep(time.Second)
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			s.status <- 0
			return
		}
		resp.Body.Close()
		s.status <- resp.StatusCode
	}()
	return s
}

// TestSlowBodiesAreCutAndStarveNeitherReportsNorOtherWrites: more slow
// bodies than there are write slots. While they hold every slot a deal
// report is still served at once (its slots are its own); the slow bodies
// are cut with 408 once they fall below the minimum rate, and a normal
// write is served again.
func TestSlowBodiesAreCutAndStarveNeitherReportsNorOtherWrites(t *testing.T) {
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.WriteToken, cfg.ReportToken = "w", reportToken
	// The grace is long enough that the slow bodies fill every slot before
	// the first is cut, even on a loaded machine under the race detector
	// beside the cluster tests.
	const grace = 20 * time.Second
	cfg.HTTPLimits = api.Limits{BodyMinRate: 64, BodyGrace: grace}
	n := startNode(t, cfg)
	agg := readyAggregate(t, n, nt, "w", 2)

	var slow []*slowBody
	start := time.Now()
	for range api.MaxWritesInFlight + 8 {
		slow = append(slow, startSlowBody(t, n.HTTPAddr(), "/v1/cars", "w"))
	}
	car := func(i int) string {
		b, _ := json.Marshal(testutil.Replicated(i, 2000, true))
		return string(b)
	}
	// The probe is a body the handler refuses at once (400) when it gets a
	// slot: a real CAR would wait for the fold's verdict, which on a
	// loaded machine could outlast the grace.
	testutil.Eventually(t, grace-time.Second, "the slow bodies to hold every write slot", func() bool {
		status, _ := post(t, n, "/v1/cars", "w", "[")
		return status == http.StatusTooManyRequests
	})

	// (a) The deal engine's report is served while producers are held.
	report := fmt.Sprintf(`{"aggregate":"%d","status":"published","deals":[{"provider":"f01000","dealId":1}]}`, agg.ID)
	status, body := post(t, n, "/v1/deals/report", reportToken, report)
	if status != http.StatusAccepted {
		t.Fatalf("a report while slow bodies hold the write slots: %d %s, want 202", status, body)
	}
	if status, _ := post(t, n, "/v1/cars", "w", car(2)); status != http.StatusTooManyRequests {
		t.Fatalf("the report was not served while the write slots were held: a write got %d", status)
	}

	// (b) Once the slow bodies are cut, writes are served again.
	testutil.Eventually(t, 3*grace, "a write to be served again", func() bool {
		status, _ := post(t, n, "/v1/cars", "w", car(3))
		return status == http.StatusAccepted
	})
	if d := time.Since(start); d > 2*grace {
		t.Fatalf("writes were blocked for %s with a %s grace", d, grace)
	}

	// (c) Every slow body was answered 408 (or turned away with 429 when it
	// came after the slots were full), none was left hanging.
	cut := 0
	for i, s := range slow {
		select {
		case got := <-s.status:
			switch got {
			case http.StatusRequestTimeout:
				cut++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("slow body %d answered %d, want 408", i, got)
			}
		case <-time.After(2 * grace):
			t.Fatalf("slow body %d still unanswered %s after it started", i, time.Since(start).Round(time.Second))
		}
	}
	if cut < api.MaxWritesInFlight {
		t.Fatalf("%d slow bodies cut with 408, want at least the %d that held the slots", cut, api.MaxWritesInFlight)
	}
}
