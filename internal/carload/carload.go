// Package carload is the load of the whole-process test tiers
// (tests/crash, tests/cluster): real CARs served over HTTP from the test
// process, a producer that publishes their car.replicated events until
// each one is stored, and the checks that every CAR ended in
// DEAL_PROCESSED, asked of ferry's HTTP API.
//
// Rules: everything listens on 127.0.0.1; the producer retries what was
// not stored, as a real producer must, and counts a retry that meets a
// stored event as a duplicate, never a second CAR.
package carload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Corpus is N real CARs served over HTTP from the test process, so they
// stay reachable while ferry is down, and their car.replicated events
// (without pieces: ferry's piece workers fetch and compute every one).
type Corpus struct {
	Events []*events.CarReplicated
	Base   string // URL base of the CARs
	Addr   string // host:port of the server, on loopback
	byName map[string][]byte
	// Fetches counts the CARs served.
	Fetches atomic.Int64
}

// New makes n CARs of 200 bytes to 4 KiB from seed and serves them until
// the test ends. source names the tier in each event's source field.
func New(t testing.TB, n int, seed uint64, source string) *Corpus {
	t.Helper()
	start := time.Now()
	cars := make([]testutil.CAR, n)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				r := rand.New(rand.NewPCG(seed, uint64(i)))
				c, err := testutil.NewCAR(seed^uint64(i)*0x9e3779b97f4a7c15, 200+r.IntN(4096-200))
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				cars[i] = c
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Corpus{byName: make(map[string][]byte, n), Base: "http://" + ln.Addr().String() + "/cars", Addr: ln.Addr().String()}
	seen := map[string]bool{}
	for i, car := range cars {
		name := car.CID.String()
		if seen[name] {
			t.Fatalf("CAR %d repeats %s", i, name)
		}
		seen[name] = true
		c.byName[name+".car"] = car.Bytes
		ev := car.Event(c.Base, false)
		ev.Source = json.RawMessage(fmt.Sprintf(`{%q:%d}`, source, i))
		c.Events = append(c.Events, ev)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cars/{name}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := c.byName[r.PathValue("name")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		c.Fetches.Add(1)
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	t.Logf("corpus: %d CARs made in %s, served at %s", n, time.Since(start).Round(time.Millisecond), c.Base)
	return c
}

// WriteLines stores the first n events as JSON lines, for ferry publish
// --file.
func (c *Corpus) WriteLines(t testing.TB, path string, n int) {
	t.Helper()
	var buf bytes.Buffer
	for _, ev := range c.Events[:min(n, len(c.Events))] {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Producer publishes every event until each one is stored, as a real
// producer must: a publish that fails or times out (ferry or NATS down)
// is retried, and a retry of a stored event is a duplicate, never a second
// CAR. Every fourth chunk goes through POST /v1/cars instead of NATS.
type Producer struct {
	Events   []*events.CarReplicated
	NATSURL  string
	Opts     []nats.Option // sign-in
	API      string        // ferry's HTTP address; "" sends everything on NATS
	Duration time.Duration // how long publishing is spread over
	Logf     func(string, ...any)

	Stored                          atomic.Int64
	viaNATS, viaHTTP, dups, retries atomic.Int64
}

// Run publishes until every event is stored or ctx ends.
func (p *Producer) Run(ctx context.Context) error {
	nc, err := nats.Connect(p.NATSURL, append([]nats.Option{nats.Name("test producer"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond), nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1),
		nats.NoCallbacksAfterClientClose()}, p.Opts...)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512), jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return err
	}
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	api := client.NewHTTP(p.API)
	api.HC = &http.Client{Timeout: 15 * time.Second}

	chunk := max(20, min(500, len(p.Events)/100))
	chunks := (len(p.Events) + chunk - 1) / chunk
	interval := p.Duration / time.Duration(max(chunks, 1))
	start := time.Now()
	lastLog := start
	for k := 0; k*chunk < len(p.Events); k++ {
		evs := p.Events[k*chunk : min((k+1)*chunk, len(p.Events))]
		viaHTTP := p.API != "" && k%4 == 3
		for attempt := 0; len(evs) > 0; attempt++ {
			if ctx.Err() != nil {
				return fmt.Errorf("stopped with %d of %d events stored: %w", p.Stored.Load(), len(p.Events), ctx.Err())
			}
			if attempt > 0 {
				p.retries.Add(1)
				SleepCtx(ctx, 250*time.Millisecond)
			}
			if viaHTTP {
				evs = p.postHTTP(ctx, api, evs)
			} else {
				evs = p.publishNATS(ctx, pub, evs)
			}
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			p.Logf("producer: %s", p.counts())
		}
		SleepCtx(ctx, time.Until(start.Add(time.Duration(k+1)*interval)))
	}
	p.Logf("producer: all %d events stored in %s (%s)", len(p.Events), time.Since(start).Round(time.Millisecond), p.counts())
	return nil
}

func (p *Producer) counts() string {
	return fmt.Sprintf("%d/%d stored: nats %d, http %d, duplicate %d, retried chunks %d",
		p.Stored.Load(), len(p.Events), p.viaNATS.Load(), p.viaHTTP.Load(), p.dups.Load(), p.retries.Load())
}

// publishNATS publishes evs asynchronously and returns those not stored.
func (p *Producer) publishNATS(ctx context.Context, pub *jetlog.Publisher, evs []*events.CarReplicated) []*events.CarReplicated {
	type sent struct {
		ev  *events.CarReplicated
		fut jetstream.PubAckFuture
	}
	var left []*events.CarReplicated
	var futs []sent
	for _, ev := range evs {
		fut, err := pub.PublishAsync(ev)
		if err != nil {
			left = append(left, ev)
			continue
		}
		futs = append(futs, sent{ev, fut})
	}
	for _, s := range futs {
		select {
		case ack := <-s.fut.Ok():
			p.Stored.Add(1)
			p.viaNATS.Add(1)
			if ack.Duplicate {
				p.dups.Add(1)
			}
		case <-s.fut.Err():
			left = append(left, s.ev)
		case <-ctx.Done():
			return append(left, s.ev)
		}
	}
	return left
}

// postHTTP submits evs in one POST /v1/cars and returns those not stored.
func (p *Producer) postHTTP(ctx context.Context, api *client.HTTP, evs []*events.CarReplicated) []*events.CarReplicated {
	res, err := api.Submit(ctx, evs)
	if err != nil || len(res) != len(evs) {
		return evs
	}
	var left []*events.CarReplicated
	for i, r := range res {
		switch r.Status {
		case wire.Accepted, wire.Duplicate:
			p.Stored.Add(1)
			p.viaHTTP.Add(1)
			if r.Status == wire.Duplicate {
				p.dups.Add(1)
			}
		case wire.Rejected:
			// A valid event refused is a bug; keep retrying so the final
			// count shows it, and say so.
			p.Logf("producer: POST /v1/cars refused %s: %s", evs[i].Car, r.Reason)
			left = append(left, evs[i])
		default:
			left = append(left, evs[i])
		}
	}
	return left
}

// SleepCtx sleeps for d or until ctx ends.
func SleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Tally is the aggregates listing summed by state.
type Tally struct {
	Cars      map[string]int // CARs per aggregate state
	Aggs      map[string]int // aggregates per state
	Ingesting uint64         // id of the INGESTING aggregate, 0 if none
}

func (t Tally) String() string {
	return fmt.Sprintf("aggregates %v, CARs by aggregate state %v", t.Aggs, t.Cars)
}

// ListTally pages through GET /v1/aggregates at addr.
func ListTally(ctx context.Context, addr string) (Tally, error) {
	c := client.NewHTTP(addr)
	c.HC = &http.Client{Timeout: 30 * time.Second}
	tl := Tally{Cars: map[string]int{}, Aggs: map[string]int{}}
	var after uint64
	for {
		page, err := c.Aggregates(ctx, "", after, api.MaxPageLimit)
		if err != nil {
			return tl, err
		}
		for _, a := range page.Aggregates {
			tl.Cars[a.State] += a.Count
			tl.Aggs[a.State]++
			if a.State == aggregator.Ingesting {
				tl.Ingesting = a.ID
			}
			after = a.ID
		}
		if len(page.Aggregates) < api.MaxPageLimit {
			return tl, nil
		}
	}
}

// CheckCars asks the API at addr for every CAR of evs and requires
// DEAL_PROCESSED with an inclusion proof and deals. It returns the
// answers' bodies as they came, by CAR, for comparing the read models of
// several ferries.
func CheckCars(t testing.TB, ctx context.Context, addr string, evs []*events.CarReplicated) map[string][]byte {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second}
	var mu sync.Mutex
	var bad int
	var examples []string
	bodies := make(map[string][]byte, len(evs))
	jobs := make(chan *events.CarReplicated)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ev := range jobs {
				body, problem := carAnswer(ctx, hc, addr, ev.Car)
				mu.Lock()
				bodies[ev.Car] = body
				if problem != "" {
					bad++
					if len(examples) < 10 {
						examples = append(examples, ev.Car+": "+problem)
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, ev := range evs {
		jobs <- ev
	}
	close(jobs)
	wg.Wait()
	if bad > 0 {
		t.Errorf("%s: %d of %d CARs are not DEAL_PROCESSED with a proof and deals, e.g.\n  %s", addr, bad, len(evs), strings.Join(examples, "\n  "))
	}
	return bodies
}

// carAnswer is the body of GET /v1/cars/{car} at addr, and what is wrong
// with it ("" when the CAR is DEAL_PROCESSED with a proof and deals).
func carAnswer(ctx context.Context, hc *http.Client, addr, car string) ([]byte, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/cars/"+car, nil)
	if err != nil {
		return nil, err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	var v wire.CarView
	if err := json.Unmarshal(body, &v); err != nil {
		return body, err.Error()
	}
	switch {
	case v.State != aggregator.DealProcessed:
		return body, fmt.Sprintf("state %s (aggregate %d, reason %q)", v.State, v.Aggregate, v.Reason)
	case v.Aggregate == 0 || v.Inclusion == nil || len(v.Deals) == 0 || v.Position == nil:
		return body, fmt.Sprintf("DEAL_PROCESSED without aggregate, position, proof or deals: %s", body)
	}
	return body, ""
}
