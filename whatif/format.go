package whatif

import (
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the report as a table, one row per policy, for a
// terminal.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "inputs %d (sequences %d-%d); skipped: %s\n\n", rep.Inputs, rep.First, rep.Last, rep.skippedText())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\taggregates\tfill min\tp50\tp90\tmax\tto READY p50\tp90\tp99\tmax\twaiting\twaste\trejected\t")
	for _, o := range rep.Policies {
		f, t := o.Fill, o.ToReady
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t\n", o.Name, o.Deals,
			pct(f.Min), pct(f.P50), pct(f.P90), pct(f.Max),
			dur(t.P50), dur(t.P90), dur(t.P99), dur(t.Max),
			o.Waiting.Queued+o.Waiting.Ingesting, o.wasteText(), o.Rejected)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, o := range rep.Policies {
		fmt.Fprintf(w, "%s: %s\n", o.Name, o.Settings)
		for _, c := range o.Changes {
			fmt.Fprintf(w, "  from input %d: %s\n", c.In, c.Settings)
		}
		for _, c := range o.Skipped {
			fmt.Fprintf(w, "  skipped: %s %d\n", c.Type, c.N)
		}
	}
	for _, o := range rep.Policies {
		if o.GroupCounts == nil {
			continue
		}
		if err := writeGroups(w, o); err != nil {
			return err
		}
	}
	return nil
}

// TopGroups is how many groups the table and the HTML report show of a
// policy, the largest by bytes, beside the shared pool; a line sums the
// rest. The JSON report holds every group.
const TopGroups = 20

// groupTable is a policy's groups as the table and the HTML show them.
type groupTable struct {
	Counts GroupCounts
	// Rows are the shared pool (when it had CARs or aggregates) and the
	// TopGroups largest groups by bytes, largest first, then by name.
	Rows []Group
	// More sums the CARs, bytes, deals, released and waiting CARs of the
	// groups left out, MoreN of them.
	More  Group
	MoreN int
}

func (o Outcome) groupTable() groupTable {
	t := groupTable{Counts: *o.GroupCounts}
	var named []Group
	for _, g := range o.Groups {
		if g.Name == "" {
			t.Rows = append(t.Rows, g)
			continue
		}
		named = append(named, g)
	}
	slices.SortStableFunc(named, func(a, b Group) int { return cmp.Compare(b.Bytes, a.Bytes) }) // by name among equals
	for i, g := range named {
		if i < TopGroups {
			t.Rows = append(t.Rows, g)
			continue
		}
		t.MoreN++
		t.More.CARs += g.CARs
		t.More.Bytes += g.Bytes
		t.More.Deals += g.Deals
		t.More.ReleasedCARs += g.ReleasedCARs
		t.More.Waiting += g.Waiting
	}
	return t
}

func writeGroups(w io.Writer, o Outcome) error {
	t := o.groupTable()
	fmt.Fprintf(w, "\ngroups of %s: %d groups, %d filled a deal alone, %d released CARs into the pool\n",
		o.Name, t.Counts.Groups, t.Counts.FilledAlone, t.Counts.Released)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\tCARs\tbytes\tdeals alone\tfill p50\treleased\tto READY p50\tp90\tmax\twaiting\t")
	for _, g := range t.Rows {
		fill := "-"
		if g.Deals > 0 {
			fill = pct(g.Fill.P50)
		}
		waits := []string{"-", "-", "-"} // none of its CARs reached READY: no wait to show
		if g.ToReady.CARs > 0 {
			waits = []string{dur(g.ToReady.P50), dur(g.ToReady.P90), dur(g.ToReady.Max)}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%d\t\n", groupName(g.Name), g.CARs, iec(g.Bytes), g.Deals, fill,
			g.ReleasedCARs, waits[0], waits[1], waits[2], g.Waiting)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if t.MoreN > 0 {
		m := t.More
		fmt.Fprintf(w, "+%d more groups: %d CARs, %s, %d deals alone, %d CARs released, %d waiting\n",
			t.MoreN, m.CARs, iec(m.Bytes), m.Deals, m.ReleasedCARs, m.Waiting)
	}
	return nil
}

// groupName is how the table and the HTML name a group.
func groupName(name string) string {
	if name == "" {
		return "(shared pool)"
	}
	return name
}

// iec spells bytes in binary units, to a tenth.
func iec(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}

func (rep *Report) skippedText() string {
	if len(rep.Skipped) == 0 {
		return "none"
	}
	parts := make([]string, len(rep.Skipped))
	for i, c := range rep.Skipped {
		parts[i] = fmt.Sprintf("%s %d", c.Type, c.N)
	}
	return strings.Join(parts, ", ")
}

func (o Outcome) wasteText() string {
	if o.Bytes.Padded == 0 {
		return "-"
	}
	return pct(float64(o.Bytes.Waste) / float64(o.Bytes.Padded+o.Bytes.Gaps))
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// dur spells seconds as a duration, to the second.
func dur(sec float64) string {
	return (time.Duration(sec * float64(time.Second))).Round(time.Second).String()
}

//go:embed report.html
var reportHTML string

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": pct, "dur": dur, "waste": Outcome.wasteText, "iec": iec, "group": groupName,
}).Parse(reportHTML))

// WriteHTML writes the report as one self-contained HTML page: tables and
// inline SVG bar charts, no script and nothing fetched.
func (rep *Report) WriteHTML(w io.Writer) error {
	type policy struct {
		Outcome
		FillChart, WaitChart chart
		Groups               *groupTable
	}
	data := struct {
		*Report
		Rows []policy
	}{Report: rep}
	for _, o := range rep.Policies {
		p := policy{Outcome: o, FillChart: fillChart(o.Fill), WaitChart: waitChart(o.ToReady)}
		if o.GroupCounts != nil {
			t := o.groupTable()
			p.Groups = &t
		}
		data.Rows = append(data.Rows, p)
	}
	return page.Execute(w, data)
}

// chart is a bar chart laid out for the SVG of report.html.
type chart struct {
	Class         string // the bars' CSS class
	Width, Height int
	Bars          []bar
}

type bar struct {
	X, Y, W, H int
	N          int
	Label      string
}

const chartHeight, barWidth, plotTop, plotBottom = 180, 44, 20, 150

func barChart(class string, labels []string, counts []int) chart {
	peak := 1
	for _, n := range counts {
		peak = max(peak, n)
	}
	c := chart{Class: class, Width: len(counts)*barWidth + 10, Height: chartHeight}
	for i, n := range counts {
		h := n * (plotBottom - plotTop) / peak
		c.Bars = append(c.Bars, bar{X: 5 + i*barWidth, Y: plotBottom - h, W: barWidth - 6, H: h, N: n, Label: labels[i]})
	}
	return c
}

func fillChart(f Fill) chart {
	labels := make([]string, len(f.Histogram))
	for i := range labels {
		labels[i] = fmt.Sprintf("%d%%", 10*i)
	}
	return barChart("fill", labels, f.Histogram[:])
}

func waitChart(w Wait) chart {
	labels := make([]string, len(w.Histogram))
	for i, b := range WaitBounds {
		labels[i] = "≤" + shortDur(b)
	}
	labels[len(WaitBounds)] = ">" + shortDur(WaitBounds[len(WaitBounds)-1])
	return barChart("wait", labels, w.Histogram[:])
}

func shortDur(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dm", d/time.Minute)
}
