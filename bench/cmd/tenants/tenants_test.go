package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// small is a workload of a few thousand inputs: three simulated days.
func small() Config {
	c := DefaultConfig()
	c.Period, c.Small, c.Big, c.BigMin, c.BigMax = 3*24*time.Hour, 400, 2, 20e9, 80e9
	return c
}

func lines(t *testing.T, args ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestTheSameSeedGivesTheSameInputsByteForByte(t *testing.T) {
	args := []string{"-period", "72h", "-small", "300", "-big", "1", "-big-max", "50000000000", "-big-min", "10000000000"}
	a, b := lines(t, args...), lines(t, args...)
	if !bytes.Equal(a, b) {
		t.Fatal("two runs with the same flags wrote different inputs")
	}
	if c := lines(t, append(args, "-seed", "2")...); bytes.Equal(a, c) {
		t.Fatal("another seed wrote the same inputs")
	}
	if n := bytes.Count(a, []byte("\n")); n < 4000 {
		t.Fatalf("%d lines: the workload should be thousands of inputs", n)
	}
}

// decoded reads the JSON lines back with events.Decode, failing on any
// event that is not valid for a 32 GiB deal.
func decoded(t *testing.T, data []byte) []events.Event {
	t.Helper()
	room := aggregator.DealRoom(baseSettings().DealSize)
	var evs []events.Event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		ev, err := events.Decode(sc.Bytes())
		if err != nil {
			t.Fatalf("line %d: %v", len(evs)+1, err)
		}
		if cr, ok := ev.(*events.CarReplicated); ok {
			if err := cr.Validate(room); err != nil {
				t.Fatalf("line %d: %v", len(evs)+1, err)
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// Every input decodes and is valid; ticks come every Tick, each CAR
// after the tick of its minute and its car.piece after it; a CAR either
// claims a piece or gets a car.piece.
func TestTheInputsAreValidAndInTimeOrder(t *testing.T) {
	c := small()
	var out bytes.Buffer
	w, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeLines("-", &out, w.Events); err != nil {
		t.Fatal(err)
	}
	evs := decoded(t, out.Bytes())
	var clock time.Time
	ticks, cars, pieces := 0, map[string]bool{}, 0
	for i, ev := range evs {
		switch e := ev.(type) {
		case *events.Tick:
			if ticks > 0 && !e.Time.Equal(clock.Add(c.Tick)) {
				t.Fatalf("input %d: tick %s after %s", i, e.Time, clock)
			}
			clock = e.Time
			ticks++
		case *events.CarReplicated:
			at, err := time.Parse(time.RFC3339, e.ReplicatedAt)
			if err != nil || at.Before(clock) || !at.Before(clock.Add(c.Tick)) {
				t.Fatalf("input %d: replicated at %s under the tick of %s", i, e.ReplicatedAt, clock)
			}
			if cars[e.Car] {
				t.Fatalf("input %d: CAR %s twice", i, e.Car)
			}
			cars[e.Car] = e.Piece == ""
		case *events.CarPiece:
			if late, ok := cars[e.Car]; !ok || !late {
				t.Fatalf("input %d: car.piece of %s, which is not an earlier CAR without a piece", i, e.Car)
			}
			cars[e.Car] = false
			pieces++
		default:
			t.Fatalf("input %d: unexpected %s", i, ev.Kind())
		}
	}
	if want := int(c.Period/c.Tick) + 1; ticks != want {
		t.Errorf("%d ticks, want %d over %s", ticks, want, c.Period)
	}
	for car, late := range cars {
		if late {
			t.Errorf("CAR %s never got its piece", car)
		}
	}
	if share := float64(pieces) / float64(len(cars)); math.Abs(share-c.PieceLater) > 0.03 {
		t.Errorf("%.3f of the CARs came without a piece, want about %.2f", share, c.PieceLater)
	}
}

// tenantOf is what the events say of one account.
type tenantOf struct {
	total   uint64
	spaces  map[string]bool
	uploads map[string]Source
}

// The tenants' totals, read back from the events' sources, follow the
// documented distribution: each small one between SmallMin and SmallMax
// and log-uniform (half of them under the geometric mean), each big one
// between BigMin and BigMax; no CAR over ShardMax; an upload's shards in
// one space of one account; accounts with several spaces.
func TestTheTenantsFollowTheDocumentedSizes(t *testing.T) {
	c := DefaultConfig()
	c.Period, c.Small, c.Big = 7*24*time.Hour, 2000, 3
	c.BigMin, c.BigMax = 50e9, 200e9 // a week's TBs would be slow to check
	w, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	byAccount := map[string]*tenantOf{}
	for _, ev := range w.Events {
		cr, ok := ev.(*events.CarReplicated)
		if !ok {
			continue
		}
		if cr.Size > c.ShardMax {
			t.Fatalf("CAR of %d bytes, over the shard size %d", cr.Size, c.ShardMax)
		}
		var src Source
		if err := json.Unmarshal(cr.Source, &src); err != nil || src.Account == "" || src.Space == "" || src.Upload == "" {
			t.Fatalf("source %s: %v", cr.Source, err)
		}
		a := byAccount[src.Account]
		if a == nil {
			a = &tenantOf{spaces: map[string]bool{}, uploads: map[string]Source{}}
			byAccount[src.Account] = a
		}
		a.total += cr.Size
		a.spaces[src.Space] = true
		if first, ok := a.uploads[src.Upload]; ok && first != src {
			t.Fatalf("upload %s in two spaces: %v and %v", src.Upload, first, src)
		}
		a.uploads[src.Upload] = src
	}
	if got, want := len(byAccount), c.Small+c.Big; got != want {
		t.Fatalf("%d accounts uploaded, want %d", got, want)
	}
	geoMean := math.Sqrt(float64(c.SmallMin) * float64(c.SmallMax))
	var under, several int
	for name, a := range byAccount {
		lo, hi := c.SmallMin, c.SmallMax
		if strings.Contains(name, "bigco") {
			lo, hi = c.BigMin, c.BigMax
			if len(a.spaces) < 2 {
				t.Errorf("big tenant %s has %d space", name, len(a.spaces))
			}
		} else if float64(a.total) < geoMean {
			under++
		}
		if a.total < lo || a.total > hi {
			t.Errorf("%s uploaded %d bytes, outside [%d, %d]", name, a.total, lo, hi)
		}
		if len(a.spaces) > 1 {
			several++
		}
	}
	// Log-uniform: the geometric mean is the median. With 2,000 tenants
	// the share under it is 0.5 ± 0.011 (one standard deviation).
	if share := float64(under) / float64(c.Small); share < 0.45 || share > 0.55 {
		t.Errorf("%.3f of the small tenants under %.0f bytes, want about half", share, geoMean)
	}
	if several < len(byAccount)/3 {
		t.Errorf("%d of %d accounts have several spaces", several, len(byAccount))
	}
}

// Published into a real JetStream, the input log holds every input in
// order, each under its type's subject with the bytes of its JSON line.
func TestPublishAppendsTheInputsInOrder(t *testing.T) {
	nt := testutil.StartNATS(t)
	args := []string{"-period", "6h", "-small", "50", "-big", "1", "-big-min", "5000000000", "-big-max", "6000000000"}
	want := bytes.Split(bytes.TrimSuffix(lines(t, args...), []byte("\n")), []byte("\n"))
	args = append(args, "-nats", nt.Server.ClientURL(), "-data", t.TempDir())
	if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := jetlog.Tail(context.Background(), nt.JS, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		ev, err := events.Decode(want[i])
		if err != nil {
			return err
		}
		if !bytes.Equal(e.Data, want[i]) || e.Msg.Subject() != jetlog.DefaultSubjects.Input(ev.Kind()) {
			t.Fatalf("input %d: %s on %s, want %s", i+1, e.Data, e.Msg.Subject(), want[i])
		}
		i++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != len(want) {
		t.Fatalf("the log holds %d inputs, the workload is %d", i, len(want))
	}
}

var row = regexp.MustCompile("(?m)^\\| `([^`]+)` \\| (\\d+) \\|")

// The report rewrites only its part of the page, the same way every
// time, and its deals are those the aggregator's own fold makes of the
// same workload under each strategy.
func TestTheReportRewritesItsPartOfThePage(t *testing.T) {
	dir := t.TempDir()
	md, html := filepath.Join(dir, "policies.md"), filepath.Join(dir, "example.html")
	page := "# Policies\n\nbefore\n\n" + beginMark + "\nold table\n" + endMark + "\n\nafter\n"
	if err := os.WriteFile(md, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"report", "-period", "72h", "-small", "400", "-big", "2", "-big-min", "20000000000", "-big-max", "80000000000",
		"-md", md, "-html", html}
	read := func() (string, string) {
		if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(md)
		b, _ := os.ReadFile(html)
		return string(a), string(b)
	}
	md1, html1 := read()
	md2, html2 := read()
	if md1 != md2 || html1 != html2 {
		t.Fatal("two runs wrote different pages")
	}
	if !strings.HasPrefix(md1, "# Policies\n\nbefore\n\n"+beginMark) || !strings.HasSuffix(md1, endMark+"\n\nafter\n") || strings.Contains(md1, "old table") {
		t.Fatalf("the page around the report changed:\n%s", md1)
	}
	if !strings.Contains(html1, "<svg") {
		t.Fatal("the HTML report has no chart")
	}

	w, err := Generate(small())
	if err != nil {
		t.Fatal(err)
	}
	rows := row.FindAllStringSubmatch(md1, -1)
	if len(rows) != len(Strategies()) {
		t.Fatalf("%d rows, want one per strategy:\n%s", len(rows), md1)
	}
	for i := range Strategies() {
		st := aggregator.New(settingsOf(t, rows[i][1]))
		deals := 0
		for j, ev := range w.Events {
			for _, d := range st.ApplyInput(aggregator.Input{Seq: uint64(j + 1), Data: testutil.MustEncode(ev)}).Decisions {
				if d.Type == events.DecAggReady {
					deals++
				}
			}
		}
		if got := rows[i][2]; got != strconv.Itoa(deals) {
			t.Errorf("row %d: %s with %s deals; the fold makes %d", i, rows[i][1], got, deals)
		}
	}
}

// settingsOf reads a row's policy as ferry whatif's --policy spec, over
// ferry serve's defaults (32 GiB, min payload just over half, 4 h).
func settingsOf(t *testing.T, spec string) events.Settings {
	t.Helper()
	cfg := events.Settings{DealSize: 32 << 30, MinPayload: (32<<30)/128*127/2 + 1, MaxWait: 4 * time.Hour}
	for kv := range strings.SplitSeq(spec, ",") {
		key, val, _ := strings.Cut(kv, "=")
		var err error
		switch key {
		case "groupby":
			cfg.GroupBy, err = events.ParseGroupBy(val)
		case "groupmaxwait":
			cfg.GroupMaxWait, err = time.ParseDuration(val)
		case "min":
			var gib uint64
			gib, err = strconv.ParseUint(strings.TrimSuffix(val, "GiB"), 10, 64)
			cfg.MinPayload = gib << 30
		default:
			t.Fatalf("policy %q: unknown key %q", spec, key)
		}
		if err != nil {
			t.Fatalf("policy %q: %v", spec, err)
		}
	}
	return cfg
}
