//go:build browser

package node

// The dashboard in a real headless browser: Debian's chromium driven with
// chromedp (make browser-test; scripts/chromium.sh installs chromium).

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// browser starts a headless chromium with a fresh profile, its network
// services off (the machine's network is closed), sending the read token
// as Basic auth, as a browser does once the user answered its prompt.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("FERRY_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no chromium at %s (scripts/chromium.sh installs it; FERRY_CHROMIUM names another): %v", path, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+dashToken))
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
	if err != nil {
		t.Fatalf("set chromium's Authorization header: %v", err)
	}
	return ctx
}

// artifacts is where screenshots go: $FERRY_ARTIFACTS, or a temporary
// directory.
func artifacts(t *testing.T) string {
	dir := os.Getenv("FERRY_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// shown is what the overview shows, read from the page.
type shown struct {
	Ingesting []struct{ ID, Group, Payload, Count string }
	States    map[string]string
	Rows      []struct{ ID, State, Payload, Count, Deals string }
	Rejected  []string
	Queues    map[string]string
}

const readOverview = `({
  Ingesting: [...document.querySelectorAll(".ingesting-agg")].map(e => ({ID: e.dataset.id, Group: e.dataset.group, Payload: e.dataset.payload, Count: e.dataset.count})),
  States: Object.fromEntries([...document.querySelectorAll("td[data-state]")].map(td => [td.dataset.state, td.textContent.trim()])),
  Rows: [...document.querySelectorAll("#aggregates tr[data-aggregate]")].map(r => ({ID: r.dataset.aggregate, State: r.dataset.state, Payload: r.dataset.payload, Count: r.dataset.count, Deals: r.dataset.deals})),
  Rejected: [...document.querySelectorAll("#rejections tr[data-input]")].map(r => r.innerText),
  Queues: Object.fromEntries([...document.querySelectorAll("#queues tr[data-queue]")].map(r => [r.dataset.queue, r.dataset.waiting])),
})`

func TestDashboardInBrowser(t *testing.T) {
	s := startDashboard(t)
	ctx := browser(t)
	dir := artifacts(t)
	bg := context.Background()

	if err := chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible(chromedp.ID("states"))); err != nil {
		t.Fatalf("load the overview: %v", err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[shown](readOverview))
	if err != nil {
		t.Fatalf("read the overview: %v", err)
	}
	shot := screenshot(t, ctx, dir, "dashboard-overview.png")
	if docs := os.Getenv("FERRY_DOCS_SCREENSHOT"); docs != "" {
		data, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(docs, data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("docs screenshot: %s", docs)
	}

	page, err := s.api.Aggregates(bg, "", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the aggregates' counts by state are the API's", func(t *testing.T) {
		want := map[string]int{}
		for _, a := range page.Aggregates {
			want[a.State]++
		}
		for _, st := range []string{aggregator.Ingesting, aggregator.Ready, aggregator.DealPending, aggregator.DealProcessed, aggregator.DealFailed, aggregator.Released} {
			if got.States[st] != strconv.Itoa(want[st]) {
				t.Errorf("%s: page shows %q, API has %d", st, got.States[st], want[st])
			}
		}
		if want[aggregator.DealProcessed] == 0 || want[aggregator.Ingesting] != 1 {
			t.Fatalf("the setup should have deals and one aggregate filling: %v", want)
		}
	})
	t.Run("each aggregate's row has the API's state, payload, count and deals", func(t *testing.T) {
		if len(got.Rows) != len(page.Aggregates) {
			t.Fatalf("page lists %d aggregates, API %d", len(got.Rows), len(page.Aggregates))
		}
		for _, a := range page.Aggregates {
			i := slices.IndexFunc(got.Rows, func(r struct{ ID, State, Payload, Count, Deals string }) bool {
				return r.ID == strconv.FormatUint(a.ID, 10)
			})
			if i < 0 {
				t.Fatalf("aggregate %d is not on the page", a.ID)
			}
			r := got.Rows[i]
			if r.State != a.State || r.Payload != strconv.FormatUint(a.Payload, 10) || r.Count != strconv.Itoa(a.Count) || r.Deals != strconv.Itoa(len(a.Deals)) {
				t.Errorf("aggregate %d: page %+v, API state %s payload %d count %d deals %d", a.ID, r, a.State, a.Payload, a.Count, len(a.Deals))
			}
		}
	})
	t.Run("the filling aggregate is the API's INGESTING one", func(t *testing.T) {
		ing, err := s.api.Aggregates(bg, aggregator.Ingesting, 0, 10)
		if err != nil || len(ing.Aggregates) != 1 {
			t.Fatalf("API: %v %v", ing, err)
		}
		a := ing.Aggregates[0]
		if len(got.Ingesting) != 1 {
			t.Fatalf("page shows %d aggregates filling, the API 1", len(got.Ingesting))
		}
		if g := got.Ingesting[0]; g.ID != strconv.FormatUint(a.ID, 10) || g.Group != a.Group || g.Payload != strconv.FormatUint(a.Payload, 10) || g.Count != strconv.Itoa(a.Count) {
			t.Fatalf("page %+v, API id %d group %q payload %d count %d", g, a.ID, a.Group, a.Payload, a.Count)
		}
		if a.Count != len(s.filling) {
			t.Fatalf("API counts %d CARs filling, the test published %d", a.Count, len(s.filling))
		}
	})
	t.Run("the rejection is listed with the API's reason", func(t *testing.T) {
		v, err := s.api.Car(bg, s.rejected)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(got.Rejected, func(row string) bool {
			return strings.Contains(row, s.rejected) && strings.Contains(row, v.Reason)
		}) {
			t.Fatalf("rejections shown %q; want %s with %q", got.Rejected, s.rejected, v.Reason)
		}
	})
	t.Run("the piece queue's depth is JetStream's", func(t *testing.T) {
		st, err := s.js.Stream(bg, jetlog.StreamWork)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(bg)
		if err != nil {
			t.Fatal(err)
		}
		if w := got.Queues["piece work"]; w != strconv.FormatUint(info.State.Msgs, 10) {
			t.Fatalf("page shows %q waiting, stream holds %d", w, info.State.Msgs)
		}
	})

	car := s.cars[0].CID.String()
	want, err := s.api.Car(bg, car)
	if err != nil {
		t.Fatal(err)
	}
	type carShown struct {
		Path, State, Aggregate, SubIndex, SubPath, IdxIndex, IdxPath, CBOR string
	}
	err = chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), car), chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitVisible(chromedp.ID("car-cid")))
	if err != nil {
		t.Fatalf("search for CAR %s: %v", car, err)
	}
	carPage, err := chromedp.Run(ctx, chromedp.Evaluate[carShown](`({Path: location.pathname,
  State: document.getElementById("car-state").textContent, Aggregate: document.getElementById("car-aggregate").textContent,
  SubIndex: document.getElementById("proof-subtree-index").textContent, SubPath: document.getElementById("proof-subtree-path").textContent,
  IdxIndex: document.getElementById("proof-index-index").textContent, IdxPath: document.getElementById("proof-index-path").textContent,
  CBOR: document.getElementById("proof-cbor").textContent})`))
	if err != nil {
		t.Fatalf("read CAR %s's page: %v", car, err)
	}
	screenshot(t, ctx, dir, "dashboard-car.png")
	t.Run("the search leads to the CAR's page with the API's aggregate and proof", func(t *testing.T) {
		if carPage.Path != "/ui/cars/"+car {
			t.Fatalf("search led to %s", carPage.Path)
		}
		if carPage.State != want.State || carPage.Aggregate != strconv.FormatUint(want.Aggregate, 10) {
			t.Fatalf("page: %s in %s; API: %s in %d", carPage.State, carPage.Aggregate, want.State, want.Aggregate)
		}
		in := want.Inclusion
		if in == nil {
			t.Fatal("the API has no proof for a CAR with deals")
		}
		lines := func(s string) []string { return strings.Fields(s) }
		apiCBOR, _ := json.Marshal(in.CBOR) // []byte in JSON: standard base64
		if carPage.SubIndex != strconv.FormatUint(in.Subtree.Index, 10) || !slices.Equal(lines(carPage.SubPath), in.Subtree.Path) ||
			carPage.IdxIndex != strconv.FormatUint(in.Index.Index, 10) || !slices.Equal(lines(carPage.IdxPath), in.Index.Path) ||
			`"`+strings.TrimSpace(carPage.CBOR)+`"` != string(apiCBOR) {
			t.Fatalf("proof on the page %+v differs from the API's %+v", carPage, in)
		}
	})

	type aggShown struct{ ID, State, Pieces string }
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("car-aggregate")), chromedp.WaitVisible(chromedp.ID("agg-id"))); err != nil {
		t.Fatalf("follow the CAR's aggregate: %v", err)
	}
	agg, err := chromedp.Run(ctx, chromedp.Evaluate[aggShown](`({ID: document.getElementById("agg-id").textContent, State: document.getElementById("agg-state").textContent,
  Pieces: String(document.querySelectorAll("tr[data-car]").length)})`))
	if err != nil {
		t.Fatalf("read the aggregate's page: %v", err)
	}
	screenshot(t, ctx, dir, "dashboard-aggregate.png")
	t.Run("the CAR's aggregate page has the API's state and pieces", func(t *testing.T) {
		a, err := s.api.Aggregate(bg, strconv.FormatUint(want.Aggregate, 10), -1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if agg.ID != strconv.FormatUint(a.ID, 10) || agg.State != a.State || agg.Pieces != strconv.Itoa(len(a.Pieces)) {
			t.Fatalf("page %+v; API id %d %s with %d pieces", agg, a.ID, a.State, len(a.Pieces))
		}
	})

	unknown := testutil.MakeCAR(t, 9999, 500).CID.String()
	err = chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), unknown), chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitVisible(chromedp.ID("error-title")))
	if err != nil {
		t.Fatalf("search for an unknown CAR: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("error-title")))
	if err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, dir, "dashboard-not-found.png")
	if title != "Not found" {
		t.Fatalf("searching for an unknown CAR shows %q, want Not found", title)
	}
}
