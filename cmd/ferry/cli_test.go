package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const cliDeal = 8 << 20

// syncBuf is a buffer commands running in goroutines can write to while
// the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bg is a background command started with Run: its output so far, and
// stop, which cancels it and waits for Run to return.
type bg struct {
	stdout, stderr *syncBuf
	done           chan struct{}
	err            error
	cancel         context.CancelFunc
	once           sync.Once
}

func (b *bg) stop(t *testing.T) error {
	t.Helper()
	b.once.Do(func() {
		b.cancel()
		select {
		case <-b.done:
		case <-time.After(30 * time.Second):
			t.Errorf("command did not return 30s after its context ended; stderr:\n%s", b.stderr)
		}
	})
	return b.err
}

// startBG runs a long-lived command in a goroutine and waits until its
// stdout matches ready.
func startBG(t *testing.T, ready *regexp.Regexp, args ...string) *bg {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &bg{stdout: &syncBuf{}, stderr: &syncBuf{}, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(b.done)
		b.err = Run(ctx, args, strings.NewReader(""), b.stdout, b.stderr)
	}()
	t.Cleanup(func() { b.stop(t) })
	deadline := time.After(30 * time.Second)
	for !ready.MatchString(b.stdout.String()) {
		select {
		case <-b.done:
			t.Fatalf("ferry %s ended before it was ready: %v\nstdout:\n%s\nstderr:\n%s", args[0], b.err, b.stdout, b.stderr)
		case <-deadline:
			t.Fatalf("ferry %s not ready after 30s\nstdout:\n%s\nstderr:\n%s", args[0], b.stdout, b.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return b
}

// server is a running `ferry serve`.
type server struct {
	*bg
	http string // host:port
	nats string // nats://…
	data string // its --data, where the NATS users' seeds are
}

var (
	servedRE = regexp.MustCompile(`(?m)^\s*http: http://(\S+)\n\s*nats: (\S+)\n`)
	simRE    = regexp.MustCompile(`(?m)^\s*offers: (http://\S+)\n`)
)

// admin signs in to the server's NATS as the admin user, with the seed
// serve wrote into its data dir.
func (s *server) admin(t *testing.T) jetstream.JetStream {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(natsembed.SeedFile(filepath.Join(s.data, "nats"), natsembed.RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	_, js := testutil.Connect(t, s.nats, opt)
	return js
}

// serve starts `ferry serve` on data with an 8MiB deal, everything on
// 127.0.0.1 with free ports, plus extra flags.
func serve(t *testing.T, data string, extra ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--deal-size", "8MiB"}, extra...)
	b := startBG(t, servedRE, args...)
	m := servedRE.FindStringSubmatch(b.stdout.String())
	return &server{bg: b, http: m[1], nats: m[2], data: data}
}

// run runs a command to completion.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	err = Run(ctx, args, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), err
}

// mustRun runs a command that has to succeed.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, args...)
	if err != nil {
		t.Fatalf("ferry %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// carSize is the size of the i-th generated CAR: 1KiB…200KiB, spread.
func carSize(i int) uint64 { return 1<<10 + uint64(i*7919)%(199<<10+1) }

// bad are three car.replicated events that parse but fail validation.
func badEvents() []*events.CarReplicated {
	md5 := testutil.Replicated(100001, 5000, true)
	md5.MD5 = "nothex"
	big := testutil.Replicated(100002, 9<<20, false)
	noCID := testutil.Replicated(100003, 5000, false)
	noCID.Car = "not-a-cid"
	return []*events.CarReplicated{md5, big, noCID}
}

// writeEvents writes n valid car.replicated lines (seeds 0…n-1) and the
// bad ones among them as a JSON lines file.
func writeEvents(t *testing.T, n int) string {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("# car.replicated events\n\n")
	bad := badEvents()
	for i := range n {
		buf.Write(testutil.MustEncode(testutil.Replicated(i, carSize(i), true)))
		buf.WriteByte('\n')
		if i%(n/len(bad)+1) == 7 {
			buf.Write(testutil.MustEncode(bad[0]))
			buf.WriteByte('\n')
			bad = bad[1:]
		}
	}
	for _, ev := range bad {
		buf.Write(testutil.MustEncode(ev))
		buf.WriteByte('\n')
	}
	f := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

type aggRow struct {
	id    uint64
	state string
	cars  int
}

// aggregateTable runs `ferry aggregates` and parses its table.
func aggregateTable(t *testing.T, addr string) []aggRow {
	t.Helper()
	out := mustRun(t, "aggregates", "--server", addr, "--limit", "1000")
	sc := bufio.NewScanner(strings.NewReader(out))
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ID") {
		t.Fatalf("ferry aggregates printed no header:\n%s", out)
	}
	var rows []aggRow
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			t.Fatalf("ferry aggregates row %q", sc.Text())
		}
		id, err1 := strconv.ParseUint(f[0], 10, 64)
		n, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("ferry aggregates row %q", sc.Text())
		}
		rows = append(rows, aggRow{id, f[1], n})
	}
	return rows
}

// closeAll waits until all want CARs are in aggregates, force-closes the
// INGESTING one with `ferry aggregates close`, and waits until every
// aggregate is closed.
func closeAll(t *testing.T, addr string, want int) []aggRow {
	t.Helper()
	count := func(rows []aggRow) (n int, ingesting []uint64) {
		for _, r := range rows {
			n += r.cars
			if r.state == "INGESTING" {
				ingesting = append(ingesting, r.id)
			}
		}
		return n, ingesting
	}
	testutil.Eventually(t, 60*time.Second, fmt.Sprintf("%d CARs in aggregates", want), func() bool {
		n, _ := count(aggregateTable(t, addr))
		if n > want {
			t.Fatalf("aggregates hold %d CARs, only %d were published", n, want)
		}
		return n == want
	})
	_, ingesting := count(aggregateTable(t, addr))
	if len(ingesting) > 0 {
		t.Logf("closing INGESTING aggregates %v with ferry aggregates close", ingesting)
	}
	for _, id := range ingesting {
		// Without an id, close finds the INGESTING aggregate itself.
		out, errOut, err := run(t, "aggregates", "--server", addr, "close")
		// max-wait may have closed it in the meantime: a 409, or none left
		// to close, is fine.
		if err != nil && !strings.Contains(err.Error(), "not INGESTING") && !strings.Contains(err.Error(), "no aggregate is INGESTING") {
			t.Fatalf("ferry aggregates close (INGESTING %d): %v\n%s%s", id, err, out, errOut)
		}
		if err == nil && !strings.Contains(out, fmt.Sprintf("close of aggregate %d requested", id)) {
			t.Fatalf("ferry aggregates close printed %q, INGESTING was %d", out, id)
		}
	}
	var rows []aggRow
	testutil.Eventually(t, 30*time.Second, "every aggregate closed", func() bool {
		rows = aggregateTable(t, addr)
		n, ing := count(rows)
		return n == want && len(ing) == 0
	})
	return rows
}

// status runs `ferry status` and decodes its JSON both ways.
func status(t *testing.T, addr, car string) (*wire.CarView, map[string]any) {
	t.Helper()
	out := mustRun(t, "status", "--server", addr, car)
	var v wire.CarView
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("ferry status %s printed %q: %v", car, out, err)
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	return &v, m
}

// aggregateOf runs `ferry aggregates ID` with all its pieces.
func aggregateOf(t *testing.T, addr string, id uint64) *wire.AggregateView {
	t.Helper()
	out := mustRun(t, "aggregates", "--server", addr, "--limit", "10000", fmt.Sprint(id))
	var a wire.AggregateView
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("ferry aggregates %d printed %q: %v", id, out, err)
	}
	return &a
}

// verifyAggregate rebuilds an aggregate with go-data-segment from the
// layout ferry lists and requires the same piece CID, size and offsets.
func verifyAggregate(t *testing.T, a *wire.AggregateView) {
	t.Helper()
	if a.Count != len(a.Pieces) || a.Next != nil {
		t.Fatalf("aggregate %d: count %d, %d pieces listed (next %v)", a.ID, a.Count, len(a.Pieces), a.Next)
	}
	infos := make([]abi.PieceInfo, len(a.Pieces))
	for i, p := range a.Pieces {
		c, err := piece.Parse(p.Piece, 0)
		if err != nil {
			t.Fatalf("aggregate %d piece %d %q: %v", a.ID, i, p.Piece, err)
		}
		if c.Padded != p.PieceSize {
			t.Fatalf("aggregate %d piece %d: CID says %d bytes, pieceSize %d", a.ID, i, c.Padded, p.PieceSize)
		}
		if i > 0 && p.PieceSize > a.Pieces[i-1].PieceSize {
			t.Fatalf("aggregate %d layout is not largest first at %d", a.ID, i)
		}
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(c.Padded), PieceCID: c.V1()}
	}
	ds, err := datasegment.NewAggregate(cliDeal, infos)
	if err != nil {
		t.Fatalf("aggregate %d: go-data-segment refuses the layout: %v", a.ID, err)
	}
	want, err := ds.PieceCID()
	if err != nil {
		t.Fatal(err)
	}
	if a.PieceV1 != want.String() || a.PieceSize != cliDeal || a.DealSize != cliDeal {
		t.Fatalf("aggregate %d: piece %s of %d bytes, go-data-segment says %s of %d", a.ID, a.PieceV1, a.PieceSize, want, cliDeal)
	}
	for i, e := range ds.Index.Entries {
		if a.Pieces[i].Offset == nil || *a.Pieces[i].Offset != e.Offset {
			t.Fatalf("aggregate %d piece %d offset %v, go-data-segment says %d", a.ID, i, a.Pieces[i].Offset, e.Offset)
		}
	}
	if v2, err := piece.Parse(a.Piece, 0); err != nil || v2.V1().String() != a.PieceV1 || v2.Padded != cliDeal {
		t.Fatalf("aggregate %d: v2 piece %s does not match v1 %s (%v)", a.ID, a.Piece, a.PieceV1, err)
	}
}

// verifyInclusion checks a CAR's inclusion proof, as ferry's status JSON
// carries it (base64 CBOR), against the CAR's own piece with go-data-segment.
func verifyInclusion(t *testing.T, car string, m map[string]any, own piece.Commitment, agg *wire.AggregateView) {
	t.Helper()
	inc, _ := m["inclusion"].(map[string]any)
	b64, _ := inc["cbor"].(string)
	enc, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(enc) == 0 {
		t.Fatalf("CAR %s: inclusion.cbor %q is not base64: %v", car, b64, err)
	}
	var proof datasegment.InclusionProof
	if err := proof.UnmarshalCBOR(bytes.NewReader(enc)); err != nil {
		t.Fatalf("CAR %s: inclusion.cbor: %v", car, err)
	}
	aux, err := proof.ComputeExpectedAuxData(datasegment.InclusionVerifierData{CommPc: own.V1(), SizePc: abi.PaddedPieceSize(own.Padded)})
	if err != nil {
		t.Fatalf("CAR %s: inclusion proof does not verify: %v", car, err)
	}
	if aux.CommPa.String() != agg.PieceV1 || uint64(aux.SizePa) != cliDeal {
		t.Fatalf("CAR %s: proof leads to %s/%d, its aggregate %d is %s/%d", car, aux.CommPa, aux.SizePa, agg.ID, agg.PieceV1, cliDeal)
	}
}

// publishedRE is publish's summary over HTTP (ferry's answers) or, "to
// NATS", JetStream's acknowledgements (stored is counted as accepted).
var publishedRE = regexp.MustCompile(`^published (\d+) events(?: to NATS)? in \S+ \(\d+/s\): (?:accepted|stored) (\d+), duplicate (\d+), (?:conflict (\d+), )?rejected(?: here)? (\d+), not acknowledged (\d+)\n(?:\(stored: .*\)\n)?$`)

// answers is publish's summary: ferry's answers to the events it sent
// (or JetStream's, with --nats).
type answers struct{ total, accepted, duplicate, conflict, rejected, unacked int }

// publishSummary parses publish's summary line.
func publishSummary(t *testing.T, out string) answers {
	t.Helper()
	m := publishedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("publish summary %q", out)
	}
	n := make([]int, 6)
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	a := answers{n[0], n[1], n[2], n[3], n[4], n[5]}
	if a.total != a.accepted+a.duplicate+a.conflict+a.rejected+a.unacked {
		t.Fatalf("publish summary %q does not add up", out)
	}
	return a
}

// publishRejecting runs a publish that sends some invalid events: it has
// to end with errRejected (exit status 3).
func publishRejecting(t *testing.T, args ...string) (answers, string) {
	t.Helper()
	out, errOut, err := run(t, append([]string{"publish"}, args...)...)
	if !errors.Is(err, errRejected) {
		t.Fatalf("publish %q: %v, want errRejected\n%s%s", args, err, out, errOut)
	}
	return publishSummary(t, out), errOut
}

func TestPublishingAThousandCarsAggregatesThemAndStatusAnswersForEach(t *testing.T) {
	start := time.Now()
	const total = 1000
	s := serve(t, t.TempDir(), "--tick", "100ms", "--max-wait", "500ms", "--piece-workers", "-1")
	file := writeEvents(t, total)

	got, errOut := publishRejecting(t, "--server", s.http, "--file", file)
	if got != (answers{total: total + 3, accepted: total, rejected: 3}) {
		t.Fatalf("publish summary %+v", got)
	}
	for _, want := range []string{"md5:", "size:", `car: "not-a-cid" is not a CID`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("publish's stderr does not mention %q:\n%s", want, errOut)
		}
	}
	t.Logf("published in %v", time.Since(start))

	rows := closeAll(t, s.http, total)
	if len(rows) < 10 {
		t.Fatalf("%d aggregates for %d CARs of up to 200KiB in 8MiB deals: %+v", len(rows), total, rows)
	}
	t.Logf("%d aggregates closed after %v", len(rows), time.Since(start))

	aggs := map[uint64]*wire.AggregateView{}
	for _, r := range rows {
		if r.state != "READY" {
			t.Fatalf("aggregate %d is %s, want READY (no deal engine)", r.id, r.state)
		}
		a := aggregateOf(t, s.http, r.id)
		verifyAggregate(t, a)
		aggs[r.id] = a
	}
	// Every CAR is in exactly one aggregate's layout.
	where := map[string]uint64{}
	for id, a := range aggs {
		for _, p := range a.Pieces {
			if prev, ok := where[p.Car]; ok {
				t.Fatalf("CAR %s is in aggregates %d and %d", p.Car, prev, id)
			}
			where[p.Car] = id
		}
	}
	if len(where) != total {
		t.Fatalf("layouts hold %d CARs, want %d", len(where), total)
	}

	for i := range total {
		car := testutil.CarCID(i).String()
		own := testutil.FakePiece(i, carSize(i))
		v, m := status(t, s.http, car)
		for _, k := range []string{"aggregate", "inclusion", "piece", "aggregatePiece", "offset"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("status of CAR %d has no %q: %v", i, k, m)
			}
		}
		if v.Car != car || v.State != "READY" || v.Size != carSize(i) || v.Piece != own.MustV2().String() || v.PieceSize != own.Padded {
			t.Fatalf("status of CAR %d: %+v", i, v)
		}
		agg := aggs[v.Aggregate]
		if agg == nil || where[car] != v.Aggregate || v.AggregatePiece != agg.Piece {
			t.Fatalf("CAR %d says aggregate %d (%s); the layouts put it in %d", i, v.Aggregate, v.AggregatePiece, where[car])
		}
		if v.Position == nil || agg.Pieces[*v.Position].Car != car || *v.Offset != *agg.Pieces[*v.Position].Offset {
			t.Fatalf("CAR %d position %v offset %v do not match its aggregate's layout", i, v.Position, v.Offset)
		}
		verifyInclusion(t, car, m, own, agg)
	}

	// The HTTP API answered the invalid events 422 and did not store them:
	// ferry knows nothing of those CARs, and says so.
	for _, ev := range badEvents()[:2] {
		out, errOut, err := run(t, "status", "--server", s.http, ev.Car)
		if err == nil || !strings.Contains(errOut+err.Error(), "not found") {
			t.Fatalf("status of refused CAR %s: %v\n%s%s, want not found", ev.Car, err, out, errOut)
		}
	}
	t.Logf("all checked after %v", time.Since(start))
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}
}

// snapshot is every answer of the HTTP API about the given CARs and all
// aggregates, raw.
func snapshot(t *testing.T, addr string, cars []string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	get := func(path string) []byte {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s %v", path, resp.StatusCode, b, err)
		}
		out[path] = b
		return b
	}
	for _, c := range cars {
		get("/v1/cars/" + c)
	}
	var page client.AggregatePage
	if err := json.Unmarshal(get("/v1/aggregates?limit=1000"), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Aggregates) == 0 {
		t.Fatal("no aggregates listed")
	}
	for _, a := range page.Aggregates {
		get(fmt.Sprintf("/v1/aggregates/%d", a.ID))
		get(fmt.Sprintf("/v1/aggregates/%d?limit=10000", a.ID))
		get(fmt.Sprintf("/v1/aggregates/%s", a.Piece))
	}
	return out
}

func sameAnswers(t *testing.T, when string, before, after map[string][]byte) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("%s: %d answers, %d before", when, len(after), len(before))
	}
	for path, b := range before {
		if !bytes.Equal(b, after[path]) {
			t.Fatalf("%s: GET %s answers\n%s\nwas\n%s", when, path, after[path], b)
		}
	}
}

// replayedRE is replay's last two lines: the read models, then the pins.
var replayedRE = regexp.MustCompile(`(?m)^replayed (\d+) batches \(aggregate log through sequence (\d+)\) in (\S+)\nreplayed the pins \(input log through sequence \d+\) in \S+\n\z`)

func TestReplayGivesTheSameAnswers(t *testing.T) {
	const total = 300
	data := t.TempDir()
	s := serve(t, data, "--tick", "100ms", "--max-wait", "500ms", "--piece-workers", "-1")
	publishRejecting(t, "--server", s.http, "--file", writeEvents(t, total))
	closeAll(t, s.http, total)
	var cars []string
	for i := range total {
		cars = append(cars, testutil.CarCID(i).String())
	}
	before := snapshot(t, s.http, cars)
	views := filepath.Join(data, "views.db")
	fiBefore, err := os.Stat(views)
	if err != nil {
		t.Fatal(err)
	}
	// A second link keeps the old inode alive, so a rebuilt file cannot
	// reuse its number and look like the same file.
	if err := os.Link(views, filepath.Join(t.TempDir(), "views.db.before")); err != nil {
		t.Fatal(err)
	}

	// While serve runs, replay refuses and deletes nothing.
	out, errOut, err := run(t, "replay", "--data", data, "--deal-size", "8MiB")
	if err == nil || !strings.Contains(err.Error(), "is ferry serve running on this data dir?") {
		t.Fatalf("replay while serve runs: %v\n%s%s", err, out, errOut)
	}
	if fi, err := os.Stat(views); err != nil || !os.SameFile(fi, fiBefore) {
		t.Fatalf("replay while serve runs touched the read models: %v", err)
	}
	sameAnswers(t, "after a refused replay", before, snapshot(t, s.http, cars))
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}

	start := time.Now()
	out = mustRun(t, "replay", "--data", data, "--deal-size", "8MiB")
	m := replayedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("replay printed %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	seq, _ := strconv.Atoi(m[2])
	took, err := time.ParseDuration(m[3])
	// A message holds one batch or several: never fewer batches than messages.
	if seq == 0 || n < seq || err != nil || took <= 0 || took > time.Since(start) {
		t.Fatalf("replay printed %q", out)
	}
	if fi, err := os.Stat(views); err != nil || os.SameFile(fi, fiBefore) {
		t.Fatalf("replay did not rebuild %s: %v", views, err)
	}
	t.Logf("replay: %s", strings.TrimSpace(out))

	s2 := serve(t, data, "--tick", "100ms", "--max-wait", "500ms", "--piece-workers", "-1")
	sameAnswers(t, "after replay and restart", before, snapshot(t, s2.http, cars))
	if err := s2.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s2.stderr)
	}

	t.Run("read models that are unreadable are rebuilt", func(t *testing.T) {
		if err := os.WriteFile(views, make([]byte, 16<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, err := run(t, "replay", "--data", data, "--deal-size", "8MiB")
		if err != nil || !replayedRE.MatchString(out) {
			t.Fatalf("replay over a corrupt views.db: %v\n%s%s", err, out, errOut)
		}
		s3 := serve(t, data, "--tick", "100ms", "--max-wait", "500ms", "--piece-workers", "-1")
		sameAnswers(t, "after replay over corrupt read models", before, snapshot(t, s3.http, cars))
		if err := s3.stop(t); err != nil {
			t.Fatalf("serve returned %v\n%s", err, s3.stderr)
		}
	})
}

func TestPublishDirAndCommandsErrors(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	var cars []testutil.CAR
	for i := range 6 {
		c := testutil.MakeCAR(t, uint64(i), 2000+i*15000)
		c.WriteTo(t, dir)
		cars = append(cars, c)
	}
	// --piece-workers 0: no piece workers in this process.
	s := serve(t, data, "--tick", "100ms", "--piece-workers", "0", "--cars", dir)
	os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not a CAR"), 0o644)
	out := mustRun(t, "publish", "--server", s.http, "--dir", dir, "--url-base", "https://carpark.example/cars/")
	if got := publishSummary(t, out); got != (answers{total: 6, accepted: 6}) {
		t.Fatalf("publish --dir: %q", out)
	}
	for _, c := range cars {
		var v *wire.CarView
		testutil.Eventually(t, 10*time.Second, "CAR "+c.CID.String()+" to be aggregating", func() bool {
			got, _, err := run(t, "status", "--server", s.http, c.CID.String())
			if err != nil {
				return false
			}
			v = new(wire.CarView)
			return json.Unmarshal([]byte(got), v) == nil && v.State == "AGGREGATING"
		})
		want := c.Event("https://carpark.example/cars", true)
		if v.Piece != want.Piece || v.Size != want.Size || v.MD5 != want.MD5 || len(v.URLs) != 1 || v.URLs[0] != want.URLs[0] {
			t.Fatalf("CAR %s: %+v, want %+v", c.CID, v, want)
		}
	}
	// Publishing again is idempotent.
	out = mustRun(t, "publish", "--server", s.http, "--dir", dir, "--url-base", "https://carpark.example/cars")
	if got := publishSummary(t, out); got != (answers{total: 6, duplicate: 6}) {
		t.Fatalf("publish --dir again: %q", out)
	}
	// A file that is not a CAR stops --dir before anything is sent.
	os.WriteFile(filepath.Join(dir, "broken.car"), []byte("not a CAR"), 0o644)
	if out, _, err := run(t, "publish", "--server", s.http, "--dir", dir); err == nil || !strings.Contains(err.Error(), "broken.car") {
		t.Fatalf("publish --dir with a broken CAR: %v %q", err, out)
	}

	t.Run("with --piece-workers 0 a CAR without a piece stays queued", func(t *testing.T) {
		one := t.TempDir()
		c := testutil.MakeCAR(t, 99, 5000)
		c.WriteTo(t, one)
		c.WriteTo(t, dir) // fetchable from serve's /cars, were anyone to fetch it
		mustRun(t, "publish", "--server", s.http, "--dir", one, "--url-base", "http://"+s.http+"/cars", "--no-piece")
		testutil.Eventually(t, 10*time.Second, "CAR to be queued", func() bool {
			out, _, err := run(t, "status", "--server", s.http, c.CID.String())
			return err == nil && strings.Contains(out, `"state": "QUEUED"`)
		})
		time.Sleep(500 * time.Millisecond)
		if v, _ := status(t, s.http, c.CID.String()); v.State != "QUEUED" || v.Piece != "" {
			t.Fatalf("with no piece workers the CAR became %+v", v)
		}
	})
	t.Run("a second serve on the same data dir is refused", func(t *testing.T) {
		_, _, err := run(t, "serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--deal-size", "8MiB")
		if err == nil || !strings.Contains(err.Error(), "views.db") {
			t.Fatalf("second serve: %v", err)
		}
		if _, _, err := run(t, "status", "--server", s.http, cars[0].CID.String()); err != nil {
			t.Fatalf("the first serve stopped answering: %v", err)
		}
	})
	t.Run("status of an unknown CID is not found", func(t *testing.T) {
		_, _, err := run(t, "status", "--server", s.http, testutil.CarCID(424242).String())
		if !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("status of a malformed CID is a 400", func(t *testing.T) {
		_, _, err := run(t, "status", "--server", "http://"+s.http, "notacid")
		var api *client.APIError
		if !errors.As(err, &api) || api.Status != 400 || !strings.Contains(err.Error(), "not a CID") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("status of an unreachable server says so", func(t *testing.T) {
		_, _, err := run(t, "status", "--server", "127.0.0.1:1", testutil.CarCID(1).String())
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{
			{},
			{"sail"},
			{"status"},
			{"status", "--file", "-", "a"},
			{"aggregates", "--server", s.http, "close", "x"},
			{"aggregates", "--server", s.http, "a", "b", "c"},
			{"publish", "--server", s.http},
			{"publish", "--server", s.http, "--in-flight", "0", "-"},
			{"serve", "--deal-size", "3MiB", "--data", t.TempDir()},
			{"serve", "--deal-size", "2KiB", "--data", t.TempDir()},
			{"serve", "--fetch-allow", "localhost", "--data", t.TempDir()},
			{"dlq", "--nats", s.nats, "--data", s.data, "sink"},
			{"fetch-worker", "--nats", s.nats, "--data", s.data, "--public-url", "http://127.0.0.1:1"},
			{"dlq", "--nats", s.nats, "--data", s.data, "--queue", "pins", "list"},
		} {
			_, errOut, err := run(t, args...)
			if !errors.Is(err, errUsage) {
				t.Errorf("ferry %q: %v, want a usage error", args, err)
			}
			// Commands whose flags parse print their usage; the error
			// itself explains the others (bad --deal-size, bad id).
			if errOut == "" && len(args) > 0 && args[0] != "serve" && !slices.Contains(args, "close") {
				t.Errorf("ferry %q printed no usage", args)
			}
		}
		if out, _, err := run(t, "help"); err != nil || !strings.Contains(out, "Usage: ferry <command>") {
			t.Errorf("help: %v %q", err, out)
		}
		if _, _, err := run(t, "status", "-h"); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("status -h: %v", err)
		}
	})
	t.Run("FERRY_ environment variables set flags and the command line wins", func(t *testing.T) {
		ev := testutil.Replicated(777, 3<<20, false)
		args := []string{"publish", "--car", ev.Car, "--size", fmt.Sprint(ev.Size), "--md5", ev.MD5, "--url", ev.URLs[0]}
		t.Setenv("FERRY_SERVER", s.http)
		if out, errOut, err := run(t, args...); err != nil || publishSummary(t, out) != (answers{total: 1, accepted: 1}) {
			t.Fatalf("with FERRY_SERVER: %v %q %q", err, out, errOut)
		}
		t.Setenv("FERRY_SERVER", "127.0.0.1:1")
		out, errOut, err := run(t, append(args, "--server", s.http)...)
		if err != nil || publishSummary(t, out) != (answers{total: 1, duplicate: 1}) {
			t.Fatalf("with --server over FERRY_SERVER: %v %q %q", err, out, errOut)
		}
		t.Setenv("FERRY_IN_FLIGHT", "lots")
		if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "FERRY_IN_FLIGHT") {
			t.Fatalf("with FERRY_IN_FLIGHT=lots: %v", err)
		}
		os.Unsetenv("FERRY_IN_FLIGHT")
		t.Setenv("FERRY_SERVER", s.http)
		if out, _, err := run(t, "status", cars[0].CID.String()); err != nil || !strings.Contains(out, cars[0].CID.String()) {
			t.Fatalf("status with FERRY_SERVER: %v %q", err, out)
		}
	})
	t.Run("publish rejects lines that are not JSON here and sends the rest", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "mixed.jsonl")
		lines := string(testutil.MustEncode(testutil.Replicated(880, 1000, true))) + "\n{not json\n\n# comment\n" +
			string(testutil.MustEncode(testutil.Replicated(881, 1000, true))) + "\n"
		os.WriteFile(f, []byte(lines), 0o644)
		got, errOut := publishRejecting(t, "--server", s.http, "--file", f)
		if got != (answers{total: 3, accepted: 2, rejected: 1}) ||
			!strings.Contains(errOut, "line 2: rejected here, not sent: not a car.replicated event") {
			t.Fatalf("%+v %q", got, errOut)
		}
		// And from stdin with "-".
		var o, e bytes.Buffer
		err := Run(context.Background(), []string{"publish", "--server", s.http, "-"}, strings.NewReader(lines), &o, &e)
		if got := publishSummary(t, o.String()); !errors.Is(err, errRejected) || got != (answers{total: 3, duplicate: 2, rejected: 1}) {
			t.Fatalf("from stdin: %v %q %q", err, o.String(), e.String())
		}
	})
	t.Run("publish to a server that is not there fails clearly", func(t *testing.T) {
		ev := testutil.Replicated(882, 1000, true)
		out, _, err := run(t, "publish", "--server", "127.0.0.1:1", "--car", ev.Car, "--size", "1000", "--md5", ev.MD5, "--url", ev.URLs[0])
		if err == nil || errors.Is(err, errRejected) || !strings.Contains(err.Error(), "127.0.0.1:1") ||
			publishSummary(t, out) != (answers{total: 1, unacked: 1}) {
			t.Fatalf("got %v %q", err, out)
		}
	})
	t.Run("publish to a NATS server that is not there fails clearly", func(t *testing.T) {
		_, _, err := run(t, "publish", "--nats", "nats://127.0.0.1:1", "--file", "/dev/null")
		if err == nil || !strings.Contains(err.Error(), "connect to NATS at nats://127.0.0.1:1") {
			t.Fatalf("got %v", err)
		}
	})
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}
}

func TestSizesParseAndFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		fmt  string
	}{
		{"32GiB", 32 << 30, "32GiB"},
		{"8MiB", 8 << 20, "8MiB"},
		{"4096", 4096, "4KiB"},
		{"4KiB", 4096, "4KiB"},
		{"1TiB", 1 << 40, "1TiB"},
		{"1536KiB", 1536 << 10, "1536KiB"},
		{" 2 MiB ", 2 << 20, "2MiB"},
		{"100B", 100, "100"},
		{"127", 127, "127"},
		{"0", 0, "0"},
		{"1025", 1025, "1025"},
	} {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if f := formatSize(tc.want); f != tc.fmt {
			t.Errorf("formatSize(%d) = %q, want %q", tc.want, f, tc.fmt)
		}
		if back, err := parseSize(formatSize(tc.want)); err != nil || back != tc.want {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", tc.want, back, err)
		}
	}
	for _, bad := range []string{"", "MiB", "8mb", "-1", "1.5GiB", "8 MB", "GiB8", "99999999999999999999"} {
		if n, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, n)
		}
	}
	t.Run("sizes beyond 2^64 bytes are refused", func(t *testing.T) {
		// 16777217TiB is 2^64+2^40: without an overflow check it would
		// wrap to 1TiB, a valid deal size.
		for _, big := range []string{"16777217TiB", "17179869185GiB", "18446744073709551616"} {
			if n, err := parseSize(big); err == nil {
				t.Errorf("parseSize(%q) = %d, want an error", big, n)
			}
		}
	})
}

func TestReceiptsCommandPrintsJSONLines(t *testing.T) {
	const token = "report-secret"
	sim := startBG(t, simRE, "spade-sim", "--listen", "127.0.0.1:0", "--report-token", token, "--delay", "10ms")
	offers := simRE.FindStringSubmatch(sim.stdout.String())[1]

	dir := t.TempDir()
	var cars []testutil.CAR
	for i := range 4 {
		c := testutil.MakeCAR(t, uint64(100+i), 3000+i*20000)
		c.WriteTo(t, dir)
		cars = append(cars, c)
	}
	// Pieces are left to the piece worker in serve, which fetches the CARs
	// from serve's own /cars.
	s := serve(t, t.TempDir(), "--tick", "100ms", "--max-wait", "200ms", "--min-payload", "1",
		"--piece-workers", "1", "--deal-engine", offers, "--report-token", token, "--cars", dir)
	out := mustRun(t, "publish", "--server", s.http, "--dir", dir, "--url-base", "http://"+s.http+"/cars", "--no-piece")
	if got := publishSummary(t, out); got != (answers{total: len(cars), accepted: len(cars)}) {
		t.Fatalf("publish: %q", out)
	}
	for _, c := range cars {
		testutil.Eventually(t, 30*time.Second, "CAR "+c.CID.String()+" in a deal", func() bool {
			got, _, err := run(t, "status", "--server", s.http, c.CID.String())
			var v wire.CarView
			return err == nil && json.Unmarshal([]byte(got), &v) == nil && v.State == "DEAL_PROCESSED"
		})
		v, _ := status(t, s.http, c.CID.String())
		if v.Piece != c.Piece.MustV2().String() || len(v.Deals) == 0 {
			t.Fatalf("CAR %s: %+v; its commP is %s", c.CID, v, c.Piece.MustV2())
		}
	}

	byCar := map[string]wire.Receipt{}
	testutil.Eventually(t, 10*time.Second, "a receipt for every CAR", func() bool {
		out := mustRun(t, "receipts", "--nats", s.nats, "--data", s.data)
		clear(byCar)
		for line := range strings.Lines(out) {
			var r wire.Receipt
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("receipts printed %q: %v", line, err)
			}
			byCar[r.Car] = r
		}
		return len(byCar) == len(cars) && strings.Count(out, "\n") == len(cars)
	})
	for _, c := range cars {
		r, ok := byCar[c.CID.String()]
		if !ok || len(r.Deals) == 0 || r.Inclusion == nil || r.Aggregate == 0 || r.Piece != c.Piece.MustV2().String() || r.DealSize != cliDeal {
			t.Fatalf("receipt of %s: %+v", c.CID, r)
		}
		a := aggregateOf(t, s.http, r.Aggregate)
		verifyAggregate(t, a)
		enc, _ := json.Marshal(map[string]any{"inclusion": map[string]any{"cbor": r.Inclusion.CBOR}})
		var m map[string]any
		json.Unmarshal(enc, &m)
		verifyInclusion(t, r.Car, m, c.Piece, a)
	}
	one := cars[2].CID.String()
	out = mustRun(t, "receipts", "--nats", s.nats, "--data", s.data, "--car", one)
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"car":"`+one+`"`) {
		t.Fatalf("receipts --car %s printed %q", one, out)
	}
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}
	if err := sim.stop(t); err != nil {
		t.Fatalf("spade-sim returned %v", err)
	}
}

var workerRE = regexp.MustCompile(`(?m)^piece-worker: \d+ workers on `)

// TestPieceWorkerFetchesOnlyWhatItsPolicyAllows: a ferry piece-worker of
// its own does not fetch a CAR from serve's /cars on loopback: the CAR is
// rejected with the policy's reason. Told --fetch-allow serve's address,
// it fetches the next one. (serve's own workers trust its /cars: see
// TestReceiptsCommandPrintsJSONLines.)
func TestPieceWorkerFetchesOnlyWhatItsPolicyAllows(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, t.TempDir(), "--tick", "100ms", "--piece-workers", "0", "--cars", dir)
	publishOne := func(seed uint64) testutil.CAR {
		t.Helper()
		one := t.TempDir()
		c := testutil.MakeCAR(t, seed, 5000)
		c.WriteTo(t, one)
		c.WriteTo(t, dir)
		mustRun(t, "publish", "--nats", s.nats, "--data", s.data, "--dir", one, "--url-base", "http://"+s.http+"/cars", "--no-piece")
		return c
	}
	worker := []string{"piece-worker", "--nats", s.nats, "--data", s.data, "--deal-size", "8MiB", "--workers", "1", "--piece-attempts", "1"}
	carView := func(c testutil.CAR) wire.CarView {
		var v wire.CarView
		if out, _, err := run(t, "status", "--server", s.http, c.CID.String()); err == nil {
			json.Unmarshal([]byte(out), &v)
		}
		return v
	}

	w := startBG(t, workerRE, worker...)
	refused := publishOne(301)
	want := "urls[0]: 127.0.0.1 is a loopback address, refused by the fetch policy (--fetch-allow-private)"
	testutil.Eventually(t, 20*time.Second, "the CAR to be rejected by the fetch policy", func() bool {
		v := carView(refused)
		return v.State == "REJECTED" && v.Reason == want
	})
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}

	startBG(t, workerRE, append(worker, "--fetch-allow", s.http)...)
	allowed := publishOne(302)
	testutil.Eventually(t, 20*time.Second, "the CAR to get its piece", func() bool {
		return carView(allowed).Piece == allowed.Piece.MustV2().String()
	})
}

// TestAggregatesReofferAndFailOrderADeal drives a deal by hand: ferry
// gives up on a failing engine (--max-offers 1), `ferry aggregates
// reoffer` offers the aggregate again, `ferry aggregates fail` fails it,
// and a reoffer to a working engine gets its deal.
func TestAggregatesReofferAndFailOrderADeal(t *testing.T) {
	const token = "report-secret"
	sim := startBG(t, simRE, "spade-sim", "--listen", "127.0.0.1:0", "--report-token", token, "--delay", "10ms", "--failure-rate", "1")
	offers := simRE.FindStringSubmatch(sim.stdout.String())[1]
	listen := strings.TrimSuffix(strings.TrimPrefix(offers, "http://"), "/offers")
	restartSim := func(delay string) {
		if err := sim.stop(t); err != nil {
			t.Fatalf("spade-sim returned %v", err)
		}
		sim = startBG(t, simRE, "spade-sim", "--listen", listen, "--report-token", token, "--delay", delay)
	}
	dir := t.TempDir()
	for i := range 2 {
		testutil.MakeCAR(t, uint64(300+i), 3000+i*5000).WriteTo(t, dir)
	}
	s := serve(t, t.TempDir(), "--tick", "50ms", "--max-wait", "200ms", "--min-payload", "1",
		"--max-offers", "1", "--offer-backoff", "100ms", "--deal-engine", offers, "--report-token", token, "--cars", dir)
	mustRun(t, "publish", "--nats", s.nats, "--data", s.data, "--dir", dir, "--url-base", "http://"+s.http+"/cars")
	waitAgg := func(what string, ok func(a *wire.AggregateView) bool) *wire.AggregateView {
		t.Helper()
		var a *wire.AggregateView
		testutil.Eventually(t, 30*time.Second, what, func() bool {
			out, _, err := run(t, "aggregates", "--server", s.http, "1")
			a = &wire.AggregateView{}
			return err == nil && json.Unmarshal([]byte(out), a) == nil && ok(a)
		})
		return a
	}
	a := waitAgg("ferry to give up on aggregate 1", func(a *wire.AggregateView) bool { return a.State == "DEAL_FAILED" })
	if a.Reason != "gave up after 1 offers: simulated failure" || a.FailedOffers != 1 {
		t.Fatalf("given-up aggregate: %+v", a)
	}

	restartSim("1h") // takes the offer and never reports in this test
	if out := mustRun(t, "aggregates", "--server", s.http, "reoffer", "1"); out != "reoffer of aggregate 1 requested\n" {
		t.Fatalf("reoffer printed %q", out)
	}
	waitAgg("the reoffer to be taken", func(a *wire.AggregateView) bool { return a.State == "DEAL_PENDING" })
	if out := mustRun(t, "aggregates", "--server", s.http, "--reason", "the provider lost the sector", "fail", "1"); out != "fail of aggregate 1 requested\n" {
		t.Fatalf("fail printed %q", out)
	}
	a = waitAgg("the operator's failure", func(a *wire.AggregateView) bool { return a.State == "DEAL_FAILED" })
	if !strings.Contains(a.Reason, "failed by the operator (http@") || !strings.HasSuffix(a.Reason, "): the provider lost the sector") {
		t.Fatalf("reason after fail: %q", a.Reason)
	}
	if _, _, err := run(t, "aggregates", "--server", s.http, "fail", "1"); err == nil || !strings.Contains(err.Error(), "aggregate 1 is DEAL_FAILED") {
		t.Fatalf("a second fail: %v", err)
	}

	restartSim("10ms")
	mustRun(t, "aggregates", "--server", s.http, "reoffer", "1")
	a = waitAgg("the deal after the engine recovered", func(a *wire.AggregateView) bool { return a.State == "DEAL_PROCESSED" })
	if len(a.Deals) == 0 || a.Offers < 1 {
		t.Fatalf("aggregate after its deal: %+v", a)
	}
	if _, _, err := run(t, "aggregates", "--server", s.http, "reoffer", "1"); err == nil || !strings.Contains(err.Error(), "DEAL_PROCESSED") {
		t.Fatalf("reoffer of a processed aggregate: %v", err)
	}
}
