package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/whatif"
)

// Markers of the part of a Markdown page the report rewrites; the rest
// of the page is left as it is.
const (
	beginMark = "<!-- policies-report: begin (make policies-report writes this part) -->"
	endMark   = "<!-- policies-report: end -->"
)

// groupMaxWait is the group max wait of the example's grouped strategies.
const groupMaxWait = 24 * time.Hour

// Strategy is one of the four ways of grouping CARs into deals, as a
// what-if policy; Name is its `ferry whatif --policy` spec.
type Strategy struct {
	Name         string
	GroupBy      string
	GroupMaxWait time.Duration
	// MinPayload, when not 0, replaces the default min payload.
	MinPayload uint64
}

// Strategies are the policies of the example: the shared pool (ferry's
// default), a group per account without and with a group max wait (the
// first shows the objection, the second its answer) and as the design
// put it, a deal once the account nears 31 GiB; per space and per upload.
func Strategies() []Strategy {
	return []Strategy{
		{Name: "groupby=none"},
		{Name: "groupby=source.account,groupmaxwait=0", GroupBy: "source.account"},
		{Name: "groupby=source.account,groupmaxwait=24h", GroupBy: "source.account", GroupMaxWait: groupMaxWait},
		{Name: "groupby=source.account,groupmaxwait=24h,min=31GiB", GroupBy: "source.account", GroupMaxWait: groupMaxWait, MinPayload: 31 << 30},
		{Name: "groupby=source.space,groupmaxwait=24h", GroupBy: "source.space", GroupMaxWait: groupMaxWait},
		{Name: "groupby=source.upload,groupmaxwait=24h", GroupBy: "source.upload", GroupMaxWait: groupMaxWait},
	}
}

func (s Strategy) apply(cfg *events.Settings) {
	cfg.GroupBy, cfg.GroupMaxWait = s.GroupBy, s.GroupMaxWait
	if s.MinPayload != 0 {
		cfg.MinPayload = s.MinPayload
	}
}

// baseSettings are ferry serve's defaults (a 32 GiB deal, half of it
// before the 4 h max wait may close an aggregate), with no bound on
// ticks: the workload's ticks are simulated time.
func baseSettings() events.Settings {
	const deal = 32 << 30
	return events.Settings{DealSize: deal, MinPayload: aggregator.DefaultMinPayload(deal), MaxWait: 4 * time.Hour}
}

// Fold folds w under every strategy and returns whatif's report.
func Fold(w *Workload, strategies []Strategy) (*whatif.Report, error) {
	var ps []whatif.Policy
	for _, s := range strategies {
		cfg := baseSettings()
		s.apply(&cfg)
		ps = append(ps, whatif.Policy{Name: s.Name, Fold: cfg})
	}
	f := whatif.New(ps, whatif.Options{})
	const chunk = 4096
	ins := make([]whatif.Input, 0, chunk)
	for i, ev := range w.Events {
		data, err := events.Encode(ev)
		if err != nil {
			return nil, err
		}
		ins = append(ins, whatif.Input{Input: aggregator.Input{Seq: uint64(i + 1), Data: data}, Type: ev.Kind()})
		if len(ins) == chunk || i == len(w.Events)-1 {
			f.ApplyAll(ins)
			ins = ins[:0]
		}
	}
	return f.Report(), nil
}

func runReport(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := configFlags(fs)
	htmlPath := fs.String("html", "", "write whatif's HTML report to this `file`")
	mdPath := fs.String("md", "", "rewrite the part of this Markdown `file` between its policies-report markers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *htmlPath == "" && *mdPath == "" {
		return errors.New("report: give -html, -md or both")
	}
	w, err := Generate(*c)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "tenants:", w.Summary())
	start := time.Now()
	rep, err := Fold(w, Strategies())
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "tenants: folded under %d policies in %s\n", len(rep.Policies), time.Since(start).Round(time.Millisecond))
	if *htmlPath != "" {
		var buf bytes.Buffer
		if err := rep.WriteHTML(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(*htmlPath, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if *mdPath != "" {
		page, err := os.ReadFile(*mdPath)
		if err != nil {
			return err
		}
		page, err = replaceBlock(page, markdown(w, rep))
		if err != nil {
			return fmt.Errorf("%s: %w", *mdPath, err)
		}
		return os.WriteFile(*mdPath, page, 0o644)
	}
	return nil
}

// replaceBlock puts block between page's markers, in place of what was
// there.
func replaceBlock(page []byte, block string) ([]byte, error) {
	before, rest, ok := bytes.Cut(page, []byte(beginMark))
	_, after, ok2 := bytes.Cut(rest, []byte(endMark))
	if !ok || !ok2 {
		return nil, fmt.Errorf("no %q … %q markers", beginMark, endMark)
	}
	var out bytes.Buffer
	out.Write(before)
	out.WriteString(beginMark + "\n" + block + endMark)
	out.Write(after)
	return out.Bytes(), nil
}

// markdown is the workload and the report's table, for the page.
func markdown(w *Workload, rep *whatif.Report) string {
	var b strings.Builder
	var small, big []uint64
	for _, t := range w.Tenants {
		if t.Big {
			big = append(big, t.Total)
		} else {
			small = append(small, t.Total)
		}
	}
	cfg := baseSettings()
	fmt.Fprintf(&b, "The workload (`go run ./bench/cmd/tenants -seed %d`): %s. Small tenants uploaded %s; big ones %s. "+
		"Every policy has a %s deal, a min payload of %s (unless it says min=) and a max wait of %s.\n\n",
		w.Config.Seed, w.Summary(), spread(small), spread(big), gib(cfg.DealSize), gib(cfg.MinPayload), span(cfg.MaxWait))
	b.WriteString("| policy | deals | fill p50 | to READY p50 | p90 | p99 | max | CARs waiting at the end | waste |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, o := range rep.Policies {
		fmt.Fprintf(&b, "| `%s` | %d | %.1f%% | %s | %s | %s | %s | %d | %s |\n", o.Name, o.Deals, 100*o.Fill.P50,
			hours(o.ToReady.P50), hours(o.ToReady.P90), hours(o.ToReady.P99), hours(o.ToReady.Max),
			o.Waiting.Queued+o.Waiting.Ingesting, waste(o))
	}
	return b.String()
}

// spread is the least, median and largest of totals, in decimal units.
func spread(totals []uint64) string {
	if len(totals) == 0 {
		return "nothing"
	}
	s := append([]uint64(nil), totals...)
	slices.Sort(s)
	return fmt.Sprintf("%s to %s each (median %s)", gb(s[0]), gb(s[len(s)-1]), gb(s[(len(s)-1)/2]))
}

func gib(n uint64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// hours spells a wait in seconds as hours (or minutes under one).
func hours(sec float64) string {
	if sec < 3600 {
		return fmt.Sprintf("%.0f min", sec/60)
	}
	return fmt.Sprintf("%.1f h", sec/3600)
}

func waste(o whatif.Outcome) string {
	if o.Bytes.Padded == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(o.Bytes.Waste)/float64(o.Bytes.Padded+o.Bytes.Gaps))
}
