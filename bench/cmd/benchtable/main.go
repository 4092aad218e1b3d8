// Command benchtable reads `go test -bench` output of ferry's benchmark
// lines (bench, frc58, carcheck, fetch, pack) and prints the table of
// docs/benchmarks.md: each figure, its baseline from the same run, the
// ratio and whether the target is met. With -count above 1 the median of
// each metric is used, and the ingest and replay ratios are the medians of
// the ratios of runs made in pairs.
//
//	benchtable [-strict] [-close-scale S] [-piece-scale S] results/*.txt
//
// -strict exits 1 when a target is missed (a line that did not run is
// listed as such and never fails).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	closeScale = flag.String("close-scale", "see frc58 flags", "scale of the Close line, for the table")
	pieceScale = flag.String("piece-scale", "see -piece.size", "scale of the Piece line, for the table")
	fetchScale = flag.String("fetch-scale", "see -fetch.size", "scale of the Fetch line, for the table")
	packScale  = flag.String("pack-scale", "see -pack.size", "scale of the Pack line, for the table")
)

func main() {
	strict := flag.Bool("strict", false, "exit 1 when a target is missed")
	flag.Parse()
	res := results{}
	for _, path := range flag.Args() {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchtable:", err)
			os.Exit(1)
		}
		res.read(f)
		f.Close()
	}
	if len(flag.Args()) == 0 {
		res.read(os.Stdin)
	}
	missed := write(os.Stdout, res)
	if *strict && missed > 0 {
		os.Exit(1)
	}
}

// results holds every value of every metric: results[benchmark][unit].
type results map[string]map[string][]float64

var procSuffix = regexp.MustCompile(`-\d+$`)

// read takes the benchmark lines of go test output:
// BenchmarkName-2  1  123 ns/op  4.5 unit ...
func (r results) read(in io.Reader) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(f[0], "")
		if r[name] == nil {
			r[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			r[name][f[i+1]] = append(r[name][f[i+1]], v)
		}
	}
}

var errMissing = errors.New("not run")

// get is the median of a metric.
func (r results) get(bench, unit string) (float64, error) {
	vs := r[bench][unit]
	if len(vs) == 0 {
		return 0, fmt.Errorf("%s %s: %w", bench, unit, errMissing)
	}
	return median(vs), nil
}

// pairedRatio is the median of the ratios a[i]/b[i] of a unit of two
// benchmarks that ran in pairs (scripts/bench.sh runs the whole benchmark
// once per count, so the i-th result of each ran back to back, under the
// same load of a shared machine). ok is false unless both have the same
// number of results, two or more; then the ratio of medians is all
// there is.
func (r results) pairedRatio(a, b, unit string) (ratio float64, pairs []float64, ok bool) {
	as, bs := r[a][unit], r[b][unit]
	if len(as) < 2 || len(as) != len(bs) {
		return 0, nil, false
	}
	for i := range as {
		pairs = append(pairs, as[i]/bs[i])
	}
	return median(pairs), pairs, true
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratioText prints a ratio with, for paired runs, how it was taken.
func ratioText(ratio float64, pairs []float64, digits int) string {
	s := strconv.FormatFloat(ratio, 'f', digits, 64) + "×"
	if len(pairs) > 0 {
		parts := make([]string, len(pairs))
		for i, p := range pairs {
			parts[i] = strconv.FormatFloat(p, 'f', digits, 64)
		}
		s += fmt.Sprintf(", median of %d paired runs (%s)", len(pairs), strings.Join(parts, ", "))
	}
	return s
}

// row is one line of the table.
type row struct {
	line, scale, figure, baseline, ratio, target, verdict string
}

// write prints the table and returns how many targets were missed.
func write(w io.Writer, r results) int {
	rows := []row{ingest(r), closeRow(r), replay(r), api(r), memory(r), pieceRow(r), pieceScaling(r), fetchRow(r), packRow(r), packSmallRow(r)}
	fmt.Fprintln(w, "| Line | Scale | ferry | Baseline (same run) | Ratio | Target | Met? |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	missed := 0
	for _, x := range rows {
		if strings.HasPrefix(x.verdict, "**missed") {
			missed++
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", x.line, x.scale, x.figure, x.baseline, x.ratio, x.target, x.verdict)
	}
	return missed
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func notRun(line, target string, err error) row {
	return row{line: line, scale: "—", figure: "not run", baseline: "—", ratio: "—", target: target,
		verdict: "— (" + strings.ReplaceAll(err.Error(), "\n", "; ") + ")"}
}

func count(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func ingest(r results) row {
	const line, target = "Ingest (events/s to status projection)", "≥ 0.5×, at 1,000,000"
	f, err1 := r.get("BenchmarkIngest/ferry", "events/s")
	b, err2 := r.get("BenchmarkIngest/raw", "events/s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	fc, _ := r.get("BenchmarkIngest/ferry", "cpu-µs/event")
	bc, _ := r.get("BenchmarkIngest/raw", "cpu-µs/event")
	n, _ := r.get("BenchmarkIngest/ferry", "cars")
	ratio, pairs, ok := r.pairedRatio("BenchmarkIngest/ferry", "BenchmarkIngest/raw", "events/s")
	if !ok {
		ratio = f / b
	}
	return row{line: line, scale: count(n) + " events",
		figure:   fmt.Sprintf("%s ev/s (%.0f CPU-µs/ev)", count(f), fc),
		baseline: fmt.Sprintf("raw JetStream pub+ordered consumer: %s msg/s (%.0f CPU-µs/msg)", count(b), bc),
		ratio:    fmt.Sprintf("%s (CPU/event %.1f×)", ratioText(ratio, pairs, 2), fc/bc), target: target, verdict: verdict(ratio >= 0.5) + scaleNote(n, 1e6)}
}

// scaleNote marks a verdict reached below the target's scale: it holds
// for that scale only.
func scaleNote(n, full float64) string {
	if n >= full {
		return ""
	}
	return " (at " + count(n) + ", below the target's " + count(full) + ")"
}

func closeRow(r results) row {
	const line, target = "Close (piece CID + every proof, 32 GiB deal)", "≤ 2 s, ≤ 0.05×, ≤ 150 MiB heap"
	f, err1 := r.get("BenchmarkCloseFerry/EachProof", "close-s")
	b, err2 := r.get("BenchmarkCloseDataSegment", "close-s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	proof, _ := r.get("BenchmarkCloseFerry/Proof", "close-s")
	heap, _ := r.get("BenchmarkCloseFerry/EachProof", "MiB-heap")
	proofHeap, _ := r.get("BenchmarkCloseFerry/Proof", "MiB-heap")
	dsHeap, _ := r.get("BenchmarkCloseDataSegment", "MiB-heap")
	sampled, _ := r.get("BenchmarkCloseDataSegment", "proofs-sampled")
	base := fmt.Sprintf("go-data-segment: %.2f s, %.0f MiB heap", b, dsHeap)
	if sampled > 0 {
		base += fmt.Sprintf(" (%s proofs sampled, rest extrapolated)", count(sampled))
	}
	ratio := f / b
	return row{line: line, scale: *closeScale,
		figure:   fmt.Sprintf("%.3f s with EachProof, %.0f MiB heap (Proof: %.3f s, %.0f MiB)", f, heap, proof, proofHeap),
		baseline: base, ratio: fmt.Sprintf("%.3f×", ratio), target: target,
		verdict: verdict(f <= 2 && ratio <= 0.05 && heap <= 150) + fullDeal(*closeScale)}
}

// fullDeal marks the Close verdict of a smoke run, below the full deal.
func fullDeal(scale string) string {
	if strings.HasPrefix(scale, "262,144") {
		return ""
	}
	return " (below the full deal)"
}

func replay(r results) row {
	const line, target = "Replay (rebuild read models from the aggregate log)", "≤ 2×"
	f, err1 := r.get("BenchmarkReplay/ferry", "s")
	b, err2 := r.get("BenchmarkReplay/raw", "s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	ratio, pairs, ok := r.pairedRatio("BenchmarkReplay/ferry", "BenchmarkReplay/raw", "s")
	if !ok {
		ratio = f / b
	}
	msgs, _ := r.get("BenchmarkReplay/ferry", "msgs")
	n, err := r.get("BenchmarkReplay/ferry", "cars")
	if err != nil { // runs before batches were grouped: a message per batch
		fr, _ := r.get("BenchmarkReplay/ferry", "msgs/s")
		br, _ := r.get("BenchmarkReplay/raw", "msgs/s")
		return row{line: line, scale: count(msgs) + " CARs",
			figure:   fmt.Sprintf("%.2f s (%s msg/s)", f, count(fr)),
			baseline: fmt.Sprintf("raw ordered-consumer read: %.2f s (%s msg/s)", b, count(br)),
			ratio:    fmt.Sprintf("%.1f×", ratio), target: target, verdict: verdict(ratio <= 2)}
	}
	fr, _ := r.get("BenchmarkReplay/ferry", "cars/s")
	return row{line: line, scale: count(n) + " CARs",
		figure:   fmt.Sprintf("%.2f s (%s CARs/s)", f, count(fr)),
		baseline: fmt.Sprintf("raw ordered-consumer read of its %s messages: %.2f s", count(msgs), b),
		ratio:    ratioText(ratio, pairs, 1), target: target, verdict: verdict(ratio <= 2)}
}

func api(r results) row {
	const line, target = "Status API GET /v1/cars/{cid}", "≥ 20,000 req/s, p99 ≤ 5 ms"
	f, err1 := r.get("BenchmarkServe/api=ferry", "req/s")
	b, err2 := r.get("BenchmarkServe/api=fixed", "req/s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	fp, _ := r.get("BenchmarkServe/api=ferry", "p99-ms")
	fp50, _ := r.get("BenchmarkServe/api=ferry", "p50-ms")
	bp, _ := r.get("BenchmarkServe/api=fixed", "p99-ms")
	conns, _ := r.get("BenchmarkServe/api=ferry", "conns")
	fcpu, _ := r.get("BenchmarkServe/api=ferry", "server-cpu-µs/req")
	bcpu, _ := r.get("BenchmarkServe/api=fixed", "server-cpu-µs/req")
	n, _ := r.get("BenchmarkServe/memory", "cars")
	scale := fmt.Sprintf("%s CARs, %.0f conns", count(n), conns)
	figure := fmt.Sprintf("ceiling (closed loop) %s req/s, p50 %.2f ms, p99 %.2f ms (server %.0f CPU-µs/req)", count(f), fp50, fp, fcpu)
	baseline := fmt.Sprintf("fixed JSON net/http, same size: %s req/s, p99 %.2f ms (%.0f CPU-µs/req)", count(b), bp, bcpu)
	met := f >= 20000 && fp <= 5
	// The open loop at the target's rate: the p99 a client sees at that
	// load. Outputs from before it was measured have only the closed loop.
	if offered, err := r.get("BenchmarkServe/api-at-rate=ferry", "offered-req/s"); err == nil {
		got, _ := r.get("BenchmarkServe/api-at-rate=ferry", "req/s")
		rp50, _ := r.get("BenchmarkServe/api-at-rate=ferry", "p50-ms")
		rp99, _ := r.get("BenchmarkServe/api-at-rate=ferry", "p99-ms")
		rcpu, _ := r.get("BenchmarkServe/api-at-rate=ferry", "server-cpu-µs/req")
		bp99, _ := r.get("BenchmarkServe/api-at-rate=fixed", "p99-ms")
		figure += fmt.Sprintf("; at %s req/s offered (open loop): %s served, p50 %.2f ms, p99 %.2f ms (%.0f CPU-µs/req)", count(offered), count(got), rp50, rp99, rcpu)
		baseline += fmt.Sprintf("; at %s req/s: p99 %.2f ms", count(offered), bp99)
		met = f >= 20000 && offered >= 20000 && got >= 0.99*offered && rp99 <= 5
	}
	return row{line: line, scale: scale, figure: figure, baseline: baseline,
		ratio: fmt.Sprintf("%.2f×", f/b), target: target, verdict: verdict(met)}
}

func memory(r results) row {
	const line, target = "Memory (ferry serve, settled RSS)", "≤ 512 MiB at 1,000,000"
	settled, err := r.get("BenchmarkServe/memory", "MiB-settled-rss")
	if err != nil {
		return notRun(line, target, err)
	}
	anon, _ := r.get("BenchmarkServe/memory", "MiB-settled-anon")
	file, _ := r.get("BenchmarkServe/memory", "MiB-settled-file")
	settle, _ := r.get("BenchmarkServe/memory", "settle-s")
	hwm, _ := r.get("BenchmarkServe/memory", "MiB-hwm")
	rss, _ := r.get("BenchmarkServe/memory", "MiB-rss")
	idle, _ := r.get("BenchmarkServe/memory", "MiB-idle-rss")
	n, _ := r.get("BenchmarkServe/memory", "cars")
	return row{line: line, scale: count(n) + " CARs",
		figure: fmt.Sprintf("RSS %.0f MiB = anon %.0f + file %.0f, %.0f s after the last CAR (right after: %.0f; peak VmHWM %.0f)",
			settled, anon, file, settle, rss, hwm),
		baseline: fmt.Sprintf("same ferry serve idle, empty: %.0f MiB", idle),
		ratio:    fmt.Sprintf("%.1f×", settled/idle), target: target, verdict: verdict(settled <= 512) + scaleNote(n, 1e6)}
}

func pieceRow(r results) row {
	const line, target = "Piece stage: Check vs bare commP, one stream", "≥ 0.9×"
	f, err1 := r.get("BenchmarkCheck", "MB/s")
	b, err2 := r.get("BenchmarkCommPBare", "MB/s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	fc, _ := r.get("BenchmarkCheck", "cpu-ns/B")
	bc, _ := r.get("BenchmarkCommPBare", "cpu-ns/B")
	ratio := f / b
	return row{line: line, scale: *pieceScale,
		figure:   fmt.Sprintf("%.0f MB/s (%.2f CPU-ns/B)", f, fc),
		baseline: fmt.Sprintf("go-fil-commp-hashhash alone: %.0f MB/s (%.2f CPU-ns/B)", b, bc),
		ratio:    fmt.Sprintf("%.2f× (CPU/B %.2f×)", ratio, fc/bc), target: target, verdict: verdict(ratio >= 0.9)}
}

func pieceScaling(r results) row {
	const line, target = "Piece stage: 2 Checks at once vs 1", "≥ 1.7×"
	f, err1 := r.get("BenchmarkCheckParallel2", "MB/s")
	b, err2 := r.get("BenchmarkCheckParallel1", "MB/s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	cf, _ := r.get("BenchmarkCommPBareParallel2", "MB/s")
	cb, _ := r.get("BenchmarkCommPBareParallel1", "MB/s")
	ratio := f / b
	return row{line: line, scale: *pieceScale,
		figure:   fmt.Sprintf("%.0f MB/s", f),
		baseline: fmt.Sprintf("one Check: %.0f MB/s (bare commP 2 vs 1: %.0f vs %.0f MB/s)", b, cf, cb),
		ratio:    fmt.Sprintf("%.2f×", ratio), target: target, verdict: verdict(ratio >= 1.7)}
}

func fetchRow(r results) row {
	const line, target = "Fetch by CID: verify + CAR CID + md5 + commP + store vs bare commP", "≥ 0.7×, heap flat in the DAG's size"
	f, err1 := r.get("BenchmarkFetch/ferry", "MB/s")
	b, err2 := r.get("BenchmarkFetch/commp", "MB/s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	heap, _ := r.get("BenchmarkFetch/ferry", "peak-heap-MiB")
	gw, _ := r.get("BenchmarkFetch/gateway", "MB/s")
	ratio := f / b
	return row{line: line, scale: *fetchScale,
		figure:   fmt.Sprintf("%.0f MB/s from boxo's gateway on loopback, peak heap %.0f MiB", f, heap),
		baseline: fmt.Sprintf("go-fil-commp-hashhash alone: %.0f MB/s (the gateway alone: %.0f MB/s)", b, gw),
		ratio:    fmt.Sprintf("%.2f×", ratio), target: target, verdict: verdict(ratio >= 0.7)}
}

func packRow(r results) row {
	const line, target = "Pack: ferry pack (--jobs 2) vs bare commP of the same bytes", "≥ 0.6×, peak RSS < 200 MiB at any size"
	f, err1 := r.get("BenchmarkPack/ferry", "MB/s")
	b, err2 := r.get("BenchmarkPack/commp", "MB/s")
	if err := errors.Join(err1, err2); err != nil {
		return notRun(line, target, err)
	}
	fc, _ := r.get("BenchmarkPack/ferry", "cpu-ns/B")
	bc, _ := r.get("BenchmarkPack/commp", "cpu-ns/B")
	ratio, pairs, ok := r.pairedRatio("BenchmarkPack/ferry", "BenchmarkPack/commp", "MB/s")
	if !ok {
		ratio = f / b
	}
	// The RSS of every tree BenchmarkPackRSS measured: the largest counts.
	var rss float64
	var trees []string
	for name, units := range r {
		if tree, ok := strings.CutPrefix(name, "BenchmarkPackRSS/"); ok && len(units["peak-RSS-MiB"]) > 0 {
			v := slices.Max(units["peak-RSS-MiB"])
			rss = max(rss, v)
			trees = append(trees, fmt.Sprintf("%s %.0f MiB", tree, v))
		}
	}
	slices.Sort(trees)
	figure := fmt.Sprintf("%.0f MB/s (%.1f CPU-ns/B)", f, fc)
	ok = ratio >= 0.6
	if len(trees) > 0 {
		figure += ", peak RSS " + strings.Join(trees, ", ")
		ok = ok && rss < 200
	}
	return row{line: line, scale: *packScale, figure: figure,
		baseline: fmt.Sprintf("go-fil-commp-hashhash alone over the files: %.0f MB/s (%.1f CPU-ns/B)", b, bc),
		ratio:    fmt.Sprintf("%s (CPU/B %.2f×)", ratioText(ratio, pairs, 2), bc/fc), target: target, verdict: verdict(ok)}
}

func packSmallRow(r results) row {
	const line, target = "Pack: small files", "files/s reported"
	f, err := r.get("BenchmarkPackSmallFiles", "files/s")
	if err != nil {
		return notRun(line, target, err)
	}
	c, _ := r.get("BenchmarkPackSmallFiles", "cpu-ns/B")
	return row{line: line, scale: "1 KiB files, see -pack.small", figure: fmt.Sprintf("%s files/s (%.0f CPU-µs/file)", count(f), c*1024/1000),
		baseline: "—", ratio: "—", target: target, verdict: "—"}
}
