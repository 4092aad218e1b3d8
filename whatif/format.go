package whatif

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
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
	}
	return nil
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
	"pct": pct, "dur": dur, "waste": Outcome.wasteText,
}).Parse(reportHTML))

// WriteHTML writes the report as one self-contained HTML page: tables and
// inline SVG bar charts, no script and nothing fetched.
func (rep *Report) WriteHTML(w io.Writer) error {
	type policy struct {
		Outcome
		FillChart, WaitChart chart
	}
	data := struct {
		*Report
		Rows []policy
	}{Report: rep}
	for _, o := range rep.Policies {
		data.Rows = append(data.Rows, policy{o, fillChart(o.Fill), waitChart(o.ToReady)})
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
