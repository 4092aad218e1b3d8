package node

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/audit"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
)

// getJSON GETs path from the node's API with the read token and decodes
// the answer into out; it returns the status.
func (s *dashSetup) getJSON(t *testing.T, path string, out any) int {
	t.Helper()
	resp, body := s.get(t, path, bearer(dashToken))
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			t.Fatalf("%s: %v in %.200q", path, err, body)
		}
	}
	return resp.StatusCode
}

type aggList struct {
	Aggregates []wire.AggregateView `json:"aggregates"`
}

// ingestingShown is what the overview shows of the aggregates filling,
// in its order.
var ingestingShown = regexp.MustCompile(`<div class="ingesting-agg" data-id="(\d+)" data-group="([^"]*)" data-payload="(\d+)" data-count="(\d+)">`)

// TestGroupsInTheAPIDashboardAndReceipts runs a ferry grouping CARs by
// source.space: groups a and b fill aggregates beside the shared pool's;
// b's is closed and gets deals; a settings.change ends grouping, which
// releases a's into the pool; the pool's gets deals. At each step the
// CARs' and aggregates' groups that the API, the dashboard, the metrics
// and the receipts show are checked against the CARs' sources and the
// API's JSON.
func TestGroupsInTheAPIDashboardAndReceipts(t *testing.T) {
	const groupMaxWait = time.Hour
	d := startDealsOn(t, "", 7, spade.SimConfig{Delay: 5 * time.Millisecond}, "", func(c *Config) {
		c.ReadToken, c.Tick = dashToken, 100*time.Millisecond
		c.Fold.GroupBy, c.Fold.GroupMaxWait = "source.space", groupMaxWait
	})
	d.api.Token = dashToken
	s := &dashSetup{dealSetup: d, base: "http://" + d.n.HTTPAddr()}
	ctx := context.Background()
	pub := jetlog.NewPublisher(d.js, jetlog.DefaultSubjects)
	// Cars 0-2 in group a, 3-4 in b, 5-6 in the pool (no space).
	spaces := []string{"a", "a", "a", "b", "b", "", ""}
	sources := map[string]json.RawMessage{}
	for i, c := range d.cars {
		ev := c.Event(s.base+"/cars", true)
		if spaces[i] != "" {
			ev.Source = json.RawMessage(`{"space":"` + spaces[i] + `","n":` + strconv.Itoa(i) + `}`)
		}
		sources[ev.Car] = ev.Source
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// groupOf is a CAR's group read from what the test sent, not from
	// ferry.
	groupOf := func(car string) string { return events.GroupOf(sources[car], "source.space") }

	var ingesting aggList
	testutil.Eventually(t, 30*time.Second, "three aggregates filling, their clocks started", func() bool {
		ingesting = aggList{}
		if s.getJSON(t, "/v1/aggregates?state=INGESTING", &ingesting) != http.StatusOK || len(ingesting.Aggregates) != 3 {
			return false
		}
		n := 0
		for _, a := range ingesting.Aggregates {
			if a.WaitSince.IsZero() {
				return false
			}
			n += a.Count
		}
		return n == len(d.cars)
	})
	byGroup := map[string]wire.AggregateView{}
	for _, a := range ingesting.Aggregates {
		byGroup[a.Group] = a
	}
	if len(byGroup) != 3 || byGroup["a"].Count != 3 || byGroup["b"].Count != 2 || byGroup[""].Count != 2 {
		t.Fatalf("INGESTING aggregates by group %+v, want a: 3 CARs, b: 2, the pool: 2", byGroup)
	}

	t.Run("each CAR's status has its group, and is in its group's aggregate", func(t *testing.T) {
		var cids []string
		for _, c := range d.cars {
			cid := c.CID.String()
			cids = append(cids, cid)
			var v wire.CarView
			if s.getJSON(t, "/v1/cars/"+cid, &v) != http.StatusOK {
				t.Fatalf("CAR %s not found", cid)
			}
			if v.Group != groupOf(cid) || v.Aggregate != byGroup[groupOf(cid)].ID || v.State != aggregator.Aggregating {
				t.Fatalf("CAR %s: group %q aggregate %d %s; sent to group %q, whose aggregate is %d", cid, v.Group, v.Aggregate, v.State, groupOf(cid), byGroup[groupOf(cid)].ID)
			}
		}
		batch, err := d.api.Cars(ctx, cids)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range batch {
			if st.View == nil || st.View.Group != groupOf(st.CID) {
				t.Fatalf("batch status of %s: %+v, want group %q", st.CID, st.View, groupOf(st.CID))
			}
		}
	})
	t.Run("the aggregates list filters by group, an empty one the pool", func(t *testing.T) {
		for _, g := range []string{"a", "b", ""} {
			var l aggList
			if s.getJSON(t, "/v1/aggregates?state=INGESTING&group="+g, &l) != http.StatusOK || len(l.Aggregates) != 1 || l.Aggregates[0].ID != byGroup[g].ID {
				t.Fatalf("group %q: %+v, want aggregate %d", g, l.Aggregates, byGroup[g].ID)
			}
		}
		var l aggList
		if s.getJSON(t, "/v1/aggregates?group=nobody", &l) != http.StatusOK || len(l.Aggregates) != 0 {
			t.Fatalf("an unknown group lists %+v", l.Aggregates)
		}
	})
	t.Run("GET /v1/settings is the log's settings, under the read token", func(t *testing.T) {
		var cfg events.Settings
		if s.getJSON(t, "/v1/settings", &cfg) != http.StatusOK || cfg != d.n.Settings() || cfg.GroupBy != "source.space" || cfg.GroupMaxWait != groupMaxWait {
			t.Fatalf("settings %+v, the node folds under %+v", cfg, d.n.Settings())
		}
		if resp, _ := s.get(t, "/v1/settings", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("without the read token: status %d", resp.StatusCode)
		}
	})
	t.Run("the overview shows every aggregate filling, the pool's first, with the API's group, payload and count", func(t *testing.T) {
		_, body := s.get(t, "/", bearer(dashToken))
		got := ingestingShown.FindAllStringSubmatch(body, -1)
		want := slices.Clone(ingesting.Aggregates)
		slices.SortFunc(want, func(x, y wire.AggregateView) int {
			if (x.Group == "") != (y.Group == "") {
				if x.Group == "" {
					return -1
				}
				return 1
			}
			return int(x.ID) - int(y.ID)
		})
		if len(got) != len(want) {
			t.Fatalf("the page shows %d aggregates filling, the API %d", len(got), len(want))
		}
		for i, a := range want {
			row := fmt.Sprintf("%d %s %d %d", a.ID, a.Group, a.Payload, a.Count)
			if shown := strings.Join(got[i][1:], " "); shown != row {
				t.Fatalf("filling #%d shown as %q, the API's is %q", i, shown, row)
			}
		}
		// The group's max wait: released in under an hour unless it fills.
		if !strings.Contains(body, "Released into the shared pool in <b class=\"group-left\">") {
			t.Fatalf("no group max wait shown on the overview")
		}
	})

	// Group b's aggregate closes and gets its deals.
	b := byGroup["b"]
	if err := d.api.CloseAggregate(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "group b's aggregate to have deals", func() bool {
		v, err := d.api.Aggregate(ctx, strconv.FormatUint(b.ID, 10), 0, 0)
		return err == nil && v.State == aggregator.DealProcessed && v.Group == "b"
	})
	// Ending grouping releases group a's aggregate into the pool.
	none := events.GroupNone
	if _, err := pub.Publish(ctx, &events.SettingsChange{GroupBy: &none, By: "test"}); err != nil {
		t.Fatal(err)
	}
	a, pool := byGroup["a"], byGroup[""]
	var released wire.AggregateView
	testutil.Eventually(t, 30*time.Second, "group a's aggregate to be released", func() bool {
		released = wire.AggregateView{}
		return s.getJSON(t, "/v1/aggregates/"+strconv.FormatUint(a.ID, 10), &released) == http.StatusOK && released.State == aggregator.Released
	})
	t.Run("a released aggregate says when and why, its CARs are the pool's and keep their group", func(t *testing.T) {
		if released.Group != "a" || released.Closed != events.ReleasedSettings || released.ReleasedAt.IsZero() || released.Count != 3 {
			t.Fatalf("released aggregate %+v", released)
		}
		var l aggList
		if s.getJSON(t, "/v1/aggregates?state=RELEASED", &l) != http.StatusOK || len(l.Aggregates) != 1 || l.Aggregates[0].ID != a.ID {
			t.Fatalf("RELEASED aggregates %+v", l.Aggregates)
		}
		for i, c := range d.cars {
			if spaces[i] != "a" {
				continue
			}
			var v wire.CarView
			if s.getJSON(t, "/v1/cars/"+c.CID.String(), &v) != http.StatusOK || v.Group != "a" || v.Aggregate != pool.ID || v.State != aggregator.Aggregating {
				t.Fatalf("released CAR %s: %+v, want group a in the pool's aggregate %d", c.CID, v, pool.ID)
			}
		}
		var cfg events.Settings
		if s.getJSON(t, "/v1/settings", &cfg) != http.StatusOK || cfg.GroupBy != "" || cfg.DealSize != d.n.Settings().DealSize {
			t.Fatalf("settings after the change %+v", cfg)
		}
		_, metrics := s.get(t, "/metrics", nil)
		if !strings.Contains(metrics, `ferry_aggregates{state="RELEASED"} 1`) {
			t.Fatalf("ferry_aggregates has no RELEASED aggregate")
		}
	})
	t.Run("the dashboard's pages show the groups and the release", func(t *testing.T) {
		_, page := s.get(t, "/ui/aggregates/"+strconv.FormatUint(a.ID, 10), bearer(dashToken))
		if !strings.Contains(page, `id="agg-group">a<`) || !strings.Contains(page, `id="agg-released"`) || !strings.Contains(page, `class="state RELEASED"`) {
			t.Fatalf("released aggregate's page: %.2000s", page)
		}
		_, page = s.get(t, "/ui/cars/"+d.cars[0].CID.String(), bearer(dashToken))
		if !strings.Contains(page, `id="car-group">a<`) || !strings.Contains(page, `href="/ui/aggregates/`+strconv.FormatUint(pool.ID, 10)+`"`) {
			t.Fatalf("released CAR's page: %.2000s", page)
		}
		_, page = s.get(t, "/", bearer(dashToken))
		if !strings.Contains(page, `data-aggregate="`+strconv.FormatUint(a.ID, 10)+`" data-state="RELEASED" data-group="a"`) {
			t.Fatalf("the overview does not list aggregate %d as RELEASED of group a", a.ID)
		}
		if _, page = s.get(t, "/", bearer(dashToken)); !strings.Contains(html.UnescapeString(page), "CARs released into the shared pool at") {
			t.Fatalf("the overview does not say when aggregate %d was released", a.ID)
		}
	})

	d.waitProcessed(t, 60*time.Second)
	testutil.Eventually(t, 20*time.Second, "a receipt for every CAR", func() bool { return len(d.receipts(t)) == len(d.cars) })
	t.Run("receipts carry the CAR's group and its aggregate's", func(t *testing.T) {
		for car, rs := range d.receipts(t) {
			for _, r := range rs {
				var agg wire.AggregateView
				if s.getJSON(t, "/v1/aggregates/"+strconv.FormatUint(r.Aggregate, 10), &agg) != http.StatusOK {
					t.Fatalf("aggregate %d of a receipt not found", r.Aggregate)
				}
				if r.Group != groupOf(car) || r.AggregateGroup != agg.Group {
					t.Fatalf("receipt of %s: group %q aggregate %d's %q; sent to group %q, the API says the aggregate's is %q",
						car, r.Group, r.Aggregate, r.AggregateGroup, groupOf(car), agg.Group)
				}
			}
		}
		// b's CARs were dealt in b's aggregate, a's in the pool's.
		rs := d.receipts(t)
		if r := rs[d.cars[3].CID.String()][0]; r.AggregateGroup != "b" || r.Aggregate != b.ID {
			t.Fatalf("receipt of a CAR of group b: %+v", r)
		}
		if r := rs[d.cars[0].CID.String()][0]; r.AggregateGroup != "" || r.Group != "a" {
			t.Fatalf("receipt of a released CAR of group a: %+v", r)
		}
	})
	t.Run("the grouped log audits clean: refolded byte for byte, every aggregate rebuilt with go-data-segment", func(t *testing.T) {
		var rep *audit.Report
		waitFor(t, "a clean audit", func() bool {
			var err error
			if rep, err = audit.Run(ctx, d.js, d.n.cfg.Fold, nil, storeViews(d.n)); err != nil {
				t.Fatal(err)
			}
			return rep.OK()
		})
		if rep.Aggregates < 3 || rep.ViewsChecked < len(d.cars) {
			t.Fatalf("the audit checked too little: %+v", rep)
		}
	})
}

// With more groups filling than the overview shows, it shows the pool's
// and the oldest groups' aggregates and sums the rest, as the API counts
// them.
func TestTheOverviewShowsTheOldestGroupsFillingAndSumsTheRest(t *testing.T) {
	const groups = 24
	d := startDealsOn(t, "", groups+1, spade.SimConfig{}, "", func(c *Config) {
		c.ReadToken = dashToken
		c.Fold.GroupBy, c.Fold.GroupMaxWait = "source.space", time.Hour
	})
	d.api.Token = dashToken
	s := &dashSetup{dealSetup: d, base: "http://" + d.n.HTTPAddr()}
	ctx := context.Background()
	pub := jetlog.NewPublisher(d.js, jetlog.DefaultSubjects)
	for i, c := range d.cars { // one CAR a group, the last in the pool
		ev := c.Event(s.base+"/cars", true)
		if i < groups {
			ev.Source = json.RawMessage(fmt.Sprintf(`{"space":"tenant-%02d"}`, i))
		}
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	var all aggList
	testutil.Eventually(t, 30*time.Second, "every CAR in an INGESTING aggregate", func() bool {
		all = aggList{}
		return s.getJSON(t, "/v1/aggregates?state=INGESTING&limit=1000", &all) == http.StatusOK && len(all.Aggregates) == groups+1
	})
	_, page := s.get(t, "/", bearer(dashToken))
	shown := regexp.MustCompile(`class="ingesting-agg" data-id="(\d+)" data-group="([^"]*)"`).FindAllStringSubmatch(page, -1)
	// The pool's first, then the groups' by id: the oldest.
	var pool wire.AggregateView
	var byID []wire.AggregateView
	for _, a := range all.Aggregates {
		if a.Group == "" {
			pool = a
		} else {
			byID = append(byID, a)
		}
	}
	want := append([]wire.AggregateView{pool}, byID[:19]...)
	if len(shown) != len(want) {
		t.Fatalf("the overview shows %d aggregates filling, want %d", len(shown), len(want))
	}
	for i, m := range shown {
		if m[1] != strconv.FormatUint(want[i].ID, 10) || m[2] != want[i].Group {
			t.Fatalf("filling aggregate %d shown: %s of group %q; want %d of %q", i, m[1], m[2], want[i].ID, want[i].Group)
		}
	}
	var cars int
	var payload uint64
	for _, a := range byID[19:] {
		cars, payload = cars+a.Count, payload+a.Payload
	}
	more := fmt.Sprintf(`id="ingesting-more" data-n="%d" data-cars="%d" data-payload="%d"`, len(byID)-19, cars, payload)
	if !strings.Contains(page, more) {
		t.Fatalf("the overview does not sum the rest as %s", more)
	}
}
