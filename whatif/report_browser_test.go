//go:build browser

package whatif_test

// The HTML report in a real headless browser (make browser-test): Debian's
// chromium, driven with chromedp, opens the file a person would open and
// what it draws is checked against the JSON report of the same fold.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferry-dev/ferry/whatif"
)

func TestTheHTMLReportDrawsTheFiguresInABrowser(t *testing.T) {
	small := baseline()
	small.DealSize, small.MaxWait = 1<<20, time.Minute
	f := whatif.New([]whatif.Policy{{Name: "recorded", Fold: baseline()}, {Name: "deal=1MiB,maxwait=1m", Fold: small},
		{Name: "space", Fold: grouped()}}, whatif.Options{})
	for _, in := range inputs(workloadOf(800, tenantSource)) {
		f.Apply(in)
	}
	rep := f.Report()
	file := filepath.Join(t.TempDir(), "whatif.html")
	out, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(out); err != nil {
		t.Fatal(err)
	}
	out.Close()

	path := os.Getenv("FERRY_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no chromium at %s (scripts/chromium.sh installs it; FERRY_CHROMIUM names another): %v", path, err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, time.Minute)
	defer cancelTimeout()

	// Per policy: the summary row's deal count, and per chart the drawn
	// bars' labels (their <title>) and rendered heights in pixels.
	// And the rows of its group table: each row's cells.
	type drawn struct {
		Deals  string
		Charts [][]struct {
			Title  string
			Height float64
		}
		Groups [][]string
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+file), chromedp.WaitVisible(chromedp.ID("summary"))); err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]drawn](`[...document.querySelectorAll("section.policy")].map((s, i) => ({
		Deals: document.querySelectorAll("#summary tr")[i+1].children[1].textContent,
		Charts: [...s.querySelectorAll("svg")].map(svg => [...svg.querySelectorAll("rect")].map(r => ({
			Title: r.querySelector("title").textContent, Height: r.getBoundingClientRect().height}))),
		Groups: [...s.querySelectorAll("table.groups tr")].slice(1).map(tr => [...tr.children].map(td => td.textContent))
	}))`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("FERRY_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, "whatif-report.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", filepath.Join(dir, "whatif-report.png"))

	if len(got) != len(rep.Policies) {
		t.Fatalf("the browser shows %d policies, the report has %d", len(got), len(rep.Policies))
	}
	for i, o := range rep.Policies {
		if got[i].Deals != strconv.Itoa(o.Deals) {
			t.Errorf("%s: the summary shows %s deals, the report %d", o.Name, got[i].Deals, o.Deals)
		}
		if len(got[i].Charts) != 2 {
			t.Fatalf("%s: %d charts drawn, want the fill and the time to READY", o.Name, len(got[i].Charts))
		}
		for c, counts := range [][]int{o.Fill.Histogram[:], o.ToReady.Histogram[:]} {
			bars := got[i].Charts[c]
			if len(bars) != len(counts) {
				t.Fatalf("%s chart %d: %d bars drawn, the report has %d bins", o.Name, c, len(bars), len(counts))
			}
			// A bar is as tall as its count against the chart's largest:
			// the rendered heights keep the report's order and its zeros.
			peak, tallest := 0, 0.0
			for b, n := range counts {
				peak, tallest = max(peak, n), max(tallest, bars[b].Height)
			}
			for b, n := range counts {
				h := bars[b].Height
				if want := tallest * float64(n) / float64(max(peak, 1)); h < want-2 || h > want+2 {
					t.Errorf("%s chart %d bar %q: %.0f px tall, want %.0f for %d of %d", o.Name, c, bars[b].Title, h, want, n, peak)
				}
			}
			if peak > 0 && tallest < 50 {
				t.Errorf("%s chart %d: the tallest bar is %.0f px: the chart is not drawn", o.Name, c, tallest)
			}
		}
		checkGroupRows(t, o, got[i].Groups)
	}
}

// checkGroupRows checks a policy's group table as the browser shows it
// against its JSON groups: the pool, then the TopGroups largest by bytes
// with their CARs, then one row summing the CARs of the rest.
func checkGroupRows(t *testing.T, o whatif.Outcome, rows [][]string) {
	t.Helper()
	if o.Groups == nil {
		if len(rows) != 0 {
			t.Errorf("%s: an ungrouped policy shows %d group rows", o.Name, len(rows))
		}
		return
	}
	named := slices.Clone(o.Groups[1:])
	slices.SortStableFunc(named, func(a, b whatif.Group) int { return int(b.Bytes) - int(a.Bytes) })
	want := [][2]string{{"(shared pool)", strconv.Itoa(o.Groups[0].CARs)}}
	rest := 0
	for i, g := range named {
		if i < whatif.TopGroups {
			want = append(want, [2]string{g.Name, strconv.Itoa(g.CARs)})
		} else {
			rest += g.CARs
		}
	}
	want = append(want, [2]string{fmt.Sprintf("+%d more groups", len(named)-whatif.TopGroups), strconv.Itoa(rest)})
	if len(rows) != len(want) {
		t.Fatalf("%s: %d group rows shown, want %d", o.Name, len(rows), len(want))
	}
	for i, w := range want {
		if rows[i][0] != w[0] || rows[i][1] != w[1] {
			t.Errorf("%s: group row %d shows %q, %s CARs; want %q, %s", o.Name, i, rows[i][0], rows[i][1], w[0], w[1])
		}
	}
}
