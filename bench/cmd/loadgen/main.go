// Command loadgen drives ferry's status API from its own process, for
// bench.BenchmarkServe, and serves the baseline it is compared with.
//
//	loadgen get -url http://127.0.0.1:8080/v1/cars/ -ids cids.txt -c 32 -d 20s
//
// requests url+ID with IDs picked at random from the file (one a line) on
// c keep-alive connections for d after a warm-up, and prints one JSON
// object: requests, errors, req/s and latency percentiles in ms.
//
//	loadgen fixed -listen 127.0.0.1:0 -size 2400
//
// serves a fixed JSON object of size bytes at every path with a trivial
// net/http handler (the machine's ceiling for a response of that size),
// prints "listening http://ADDR" and runs until stdin closes or it is
// killed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: loadgen get|fixed [flags]")
	}
	switch args[0] {
	case "get":
		return runGet(args[1:], stdout)
	case "fixed":
		return runFixed(args[1:], stdin, stdout)
	}
	return fmt.Errorf("unknown command %q: want get or fixed", args[0])
}

// Result is what get prints.
type Result struct {
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	ReqPerSec  float64 `json:"reqPerSec"`
	MeanBytes  float64 `json:"meanBytes"`
	P50ms      float64 `json:"p50ms"`
	P90ms      float64 `json:"p90ms"`
	P99ms      float64 `json:"p99ms"`
	P999ms     float64 `json:"p999ms"`
	MaxMs      float64 `json:"maxMs"`
	Conns      int     `json:"conns"`
	FirstError string  `json:"firstError,omitempty"`
}

func runGet(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	url := fs.String("url", "", "URL prefix; each request appends one ID")
	idsPath := fs.String("ids", "", "file of IDs, one a line")
	conns := fs.Int("c", 32, "connections, each with one request in flight")
	dur := fs.Duration("d", 10*time.Second, "measured duration")
	warm := fs.Duration("warmup", 2*time.Second, "unmeasured warm-up before it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := readLines(*idsPath)
	if err != nil {
		return err
	}
	if *url == "" || len(ids) == 0 {
		return errors.New("get: -url and a non-empty -ids file are needed")
	}
	tr := &http.Transport{MaxIdleConns: *conns, MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns,
		DisableCompression: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx := context.Background()
	if *warm > 0 {
		drive(ctx, client, *url, ids, *conns, *warm, nil)
	}
	res := drive(ctx, client, *url, ids, *conns, *dur, &Result{})
	return json.NewEncoder(stdout).Encode(res)
}

// drive runs conns workers for d; with res nil it only warms up.
func drive(ctx context.Context, client *http.Client, url string, ids []string, conns int, d time.Duration, res *Result) *Result {
	type worker struct {
		lat      []time.Duration
		errs     int
		bytes    int64
		firstErr string
	}
	ws := make([]worker, conns)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range ws {
		w := &ws[i]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for time.Now().Before(deadline) {
				t0 := time.Now()
				n, err := get(ctx, client, url+ids[rng.IntN(len(ids))])
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					continue
				}
				w.lat = append(w.lat, time.Since(t0))
				w.bytes += n
			}
		})
	}
	wg.Wait()
	if res == nil {
		return nil
	}
	elapsed := time.Since(start)
	var all []time.Duration
	var bytes int64
	for _, w := range ws {
		all = append(all, w.lat...)
		res.Errors += w.errs
		bytes += w.bytes
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
	}
	slices.Sort(all)
	res.Requests, res.Seconds, res.Conns = len(all), elapsed.Seconds(), conns
	res.ReqPerSec = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		res.MeanBytes = float64(bytes) / float64(len(all))
		res.P50ms, res.P90ms = pct(all, 0.50), pct(all, 0.90)
		res.P99ms, res.P999ms = pct(all, 0.99), pct(all, 0.999)
		res.MaxMs = ms(all[len(all)-1])
	}
	return res
}

func get(ctx context.Context, client *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, err
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return n, nil
}

// pct is the q quantile of sorted latencies, in ms.
func pct(sorted []time.Duration, q float64) float64 {
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

func runFixed(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("fixed", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	size := fs.Int("size", 2048, "response body size in bytes (at least 12)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := fixedBody(*size)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "listening http://%s\n", ln.Addr())
	go func() {
		io.Copy(io.Discard, stdin) // the parent closes stdin to stop us
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fixedBody is a JSON object of exactly size bytes (at least 12), ending
// in a newline as ferry's answers do.
func fixedBody(size int) []byte {
	pad := max(size-len(`{"pad":""}`)-1, 0)
	return []byte(`{"pad":"` + strings.Repeat("x", pad) + `"}` + "\n")
}
