package main

import (
	"strings"
	"testing"
)

// serveOutput is go test output of BenchmarkServe's API lines with the
// given figures; atRateServed empty leaves the open loop out (outputs
// from before it was measured).
func serveOutput(closedRPS, closedP99, atRateServed, atRateP99 string) string {
	out := `BenchmarkServe/memory-2 1 1000 ns/op 371 MiB-settled-rss 1000000 cars
BenchmarkServe/api=ferry-2 1 1000 ns/op 32 conns 1.4 p50-ms ` + closedP99 + ` p99-ms ` + closedRPS + ` req/s 60 server-cpu-µs/req
BenchmarkServe/api=fixed-2 1 1000 ns/op 32 conns 0.7 p50-ms 7.7 p99-ms 28762 req/s 35 server-cpu-µs/req
`
	if atRateServed != "" {
		out += `BenchmarkServe/api-at-rate=ferry-2 1 1000 ns/op 32 conns 20000 offered-req/s 0.5 p50-ms ` + atRateP99 + ` p99-ms ` + atRateServed + ` req/s 62 server-cpu-µs/req
BenchmarkServe/api-at-rate=fixed-2 1 1000 ns/op 32 conns 20000 offered-req/s 0.3 p50-ms 5.2 p99-ms 19999 req/s 48 server-cpu-µs/req
`
	}
	return out
}

// The status API target is met only when the ceiling reaches 20,000 and,
// at 20,000 offered, ferry serves them all with p99 ≤ 5 ms; without an
// open-loop run the closed loop's p99 decides, as before it existed.
func TestAPIVerdict(t *testing.T) {
	for _, c := range []struct {
		name      string
		out       string
		want      string
		wantRatio string // ferry's ceiling over the fixed handler's 28,762
	}{
		{"ceiling and p99 at rate", serveOutput("24000", "9.0", "19990", "4.1"), "met", "0.83×"},
		{"p99 at rate too high", serveOutput("24000", "9.0", "19990", "5.6"), "**missed**", "0.83×"},
		{"falls behind the rate", serveOutput("24000", "9.0", "19485", "4.0"), "**missed**", "0.83×"},
		{"ceiling below 20,000", serveOutput("19561", "4.0", "19990", "4.1"), "**missed**", "0.68×"},
		{"closed loop only, met", serveOutput("21000", "4.5", "", ""), "met", "0.73×"},
		{"closed loop only, p99 too high", serveOutput("21000", "11.9", "", ""), "**missed**", "0.73×"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := results{}
			r.read(strings.NewReader(c.out))
			got := api(r)
			if got.verdict != c.want {
				t.Fatalf("verdict %q, want %q (%+v)", got.verdict, c.want, got)
			}
			if got.ratio != c.wantRatio {
				t.Fatalf("ratio %q, want %q", got.ratio, c.wantRatio)
			}
		})
	}
}

// Figures are medians over runs, and a line that did not run says so
// instead of failing the table.
func TestMediansAndMissingLines(t *testing.T) {
	r := results{}
	r.read(strings.NewReader(`BenchmarkIngest/ferry-2 1 1 ns/op 30000 events/s 55 cpu-µs/event 1000000 cars
BenchmarkIngest/ferry-2 1 1 ns/op 34000 events/s 50 cpu-µs/event 1000000 cars
BenchmarkIngest/ferry-2 1 1 ns/op 36000 events/s 49 cpu-µs/event 1000000 cars
BenchmarkIngest/raw-2 1 1 ns/op 70000 events/s 20 cpu-µs/event 1000000 cars
BenchmarkIngest/raw-2 1 1 ns/op 68000 events/s 21 cpu-µs/event 1000000 cars
garbage line
`))
	if v, err := r.get("BenchmarkIngest/ferry", "events/s"); err != nil || v != 34000 {
		t.Fatalf("median of three: %v %v", v, err)
	}
	if v, err := r.get("BenchmarkIngest/raw", "events/s"); err != nil || v != 69000 {
		t.Fatalf("median of two: %v %v", v, err)
	}
	row := ingest(r)
	if row.ratio != "0.49× (CPU/event 2.4×)" || row.verdict != "**missed**" {
		t.Fatalf("ingest row (three runs against two: no pairs): %+v", row)
	}
	var sb strings.Builder
	missed := write(&sb, r)
	if missed != 1 {
		t.Fatalf("missed %d, want 1 (ingest; the lines that did not run do not count):\n%s", missed, sb.String())
	}
	if !strings.Contains(sb.String(), "| Replay (rebuild read models from the aggregate log) | — | not run |") {
		t.Fatalf("replay not listed as not run:\n%s", sb.String())
	}
}

// Runs made in pairs give the median of the pairs' ratios, which can
// differ from the ratio of the medians: here the medians (36,000 and
// 72,000) make 0.50×, while two of three pairs say 0.47× or less.
func TestPairedRatios(t *testing.T) {
	r := results{}
	r.read(strings.NewReader(`BenchmarkIngest/ferry-2 1 1 ns/op 36000 events/s 50 cpu-µs/event 1000000 cars
BenchmarkIngest/raw-2 1 1 ns/op 60000 events/s 20 cpu-µs/event 1000000 cars
BenchmarkIngest/ferry-2 1 1 ns/op 34000 events/s 50 cpu-µs/event 1000000 cars
BenchmarkIngest/raw-2 1 1 ns/op 72000 events/s 20 cpu-µs/event 1000000 cars
BenchmarkIngest/ferry-2 1 1 ns/op 37000 events/s 50 cpu-µs/event 1000000 cars
BenchmarkIngest/raw-2 1 1 ns/op 80000 events/s 20 cpu-µs/event 1000000 cars
BenchmarkReplay/ferry-2 1 1 ns/op 7 s 1000000 cars 8000 msgs
BenchmarkReplay/raw-2 1 1 ns/op 0.5 s 1000000 cars 8000 msgs
BenchmarkReplay/ferry-2 1 1 ns/op 6 s 1000000 cars 8000 msgs
BenchmarkReplay/raw-2 1 1 ns/op 0.6 s 1000000 cars 8000 msgs
`))
	row := ingest(r)
	if want := "0.47×, median of 3 paired runs (0.60, 0.47, 0.46) (CPU/event 2.5×)"; row.ratio != want || row.verdict != "**missed**" {
		t.Fatalf("ingest ratio %q (%s), want %q, missed", row.ratio, row.verdict, want)
	}
	// Two pairs: 14 and 10, median 12; the ratio of medians is 6.5/0.55.
	if row := replay(r); !strings.HasPrefix(row.ratio, "12.0×, median of 2 paired runs (14.0, 10.0)") {
		t.Fatalf("replay ratio %q", row.ratio)
	}
}

// The pack line is met only when the paired ratio reaches 0.6 and every
// tree's peak RSS stays under 200 MiB.
func TestPackVerdict(t *testing.T) {
	const runs = `BenchmarkPack/ferry-2 1 1 ns/op 150 MB/s 14 cpu-ns/B
BenchmarkPack/commp-2 1 1 ns/op 220 MB/s 9 cpu-ns/B
BenchmarkPack/ferry-2 1 1 ns/op 120 MB/s 14 cpu-ns/B
BenchmarkPack/commp-2 1 1 ns/op 210 MB/s 9 cpu-ns/B
BenchmarkPack/ferry-2 1 1 ns/op 140 MB/s 14 cpu-ns/B
BenchmarkPack/commp-2 1 1 ns/op 200 MB/s 9 cpu-ns/B
`
	for _, c := range []struct {
		name, rss, want string
	}{
		{"fast and small", "BenchmarkPackRSS/tree=4096MiB-2 1 1 ns/op 60 peak-RSS-MiB\n", "met"},
		{"fast, no RSS measured", "", "met"},
		{"one tree too large", "BenchmarkPackRSS/tree=4096MiB-2 1 1 ns/op 60 peak-RSS-MiB\nBenchmarkPackRSS/small=100000-2 1 1 ns/op 230 peak-RSS-MiB\n", "**missed**"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := results{}
			r.read(strings.NewReader(runs + c.rss))
			got := packRow(r)
			if got.verdict != c.want {
				t.Fatalf("verdict %q, want %q (%+v)", got.verdict, c.want, got)
			}
			// Paired: 0.68, 0.57, 0.70.
			if !strings.HasPrefix(got.ratio, "0.68×, median of 3 paired runs") {
				t.Fatalf("ratio %q", got.ratio)
			}
		})
	}
}
