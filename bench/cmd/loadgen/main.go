// Command loadgen drives ferry's status API from its own process, for
// bench.BenchmarkServe, and serves the baseline it is compared with.
//
//	loadgen get -url http://127.0.0.1:8080/v1/cars/ -ids cids.txt -c 32 -d 20s [-rate 20000]
//
// requests url+ID with IDs picked at random from the file (one a line) on
// c keep-alive connections for d after a warm-up, and prints one JSON
// object: requests, errors, req/s and latency percentiles in ms. Without
// -rate each connection sends its next request when the last is answered
// (closed loop: the server's ceiling); with -rate the requests are due on
// a fixed schedule and latency counts from when each was due (open loop:
// the latency a service sees at that load).
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
	"strconv"
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
	Rate       float64 `json:"rate,omitempty"`
	FirstError string  `json:"firstError,omitempty"`
}

func runGet(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	prefix := fs.String("url", "", "http:// URL prefix; each request appends one ID")
	idsPath := fs.String("ids", "", "file of IDs, one a line")
	conns := fs.Int("c", 32, "connections, each with one request in flight")
	rate := fs.Float64("rate", 0, "requests per second offered on a fixed schedule (open loop; latency counts from each request's scheduled time); 0: every connection sends its next request as soon as its answer is read (closed loop)")
	dur := fs.Duration("d", 10*time.Second, "measured duration")
	warm := fs.Duration("warmup", 2*time.Second, "unmeasured warm-up before it")
	timeout := fs.Duration("timeout", 30*time.Second, "longest wait for one answer; a request that takes longer counts as an error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := readLines(*idsPath)
	if err != nil {
		return err
	}
	if *prefix == "" || len(ids) == 0 {
		return errors.New("get: -url and a non-empty -ids file are needed")
	}
	if *conns < 1 || *rate < 0 {
		return errors.New("get: -c must be at least 1 and -rate not negative")
	}
	addr, host, path, err := target(*prefix)
	if err != nil {
		return err
	}
	l := &load{path: path, ids: ids, conns: make([]rawConn, *conns), rate: *rate}
	for i := range l.conns {
		l.conns[i] = rawConn{addr: addr, host: host, timeout: *timeout}
	}
	if *warm > 0 {
		l.drive(*warm, nil)
	}
	res := l.drive(*dur, &Result{})
	l.close()
	return json.NewEncoder(stdout).Encode(res)
}

// load is the connections and the paths they request: path+ID.
type load struct {
	path  string
	ids   []string
	conns []rawConn
	rate  float64 // 0: closed loop
}

func (l *load) close() {
	for i := range l.conns {
		l.conns[i].close()
	}
}

// drive runs one worker per connection for d; with res nil it only warms
// up. In the open loop request k of the run is due at start + k/rate and
// connection i sends requests i, i+c, i+2c, ...: a request whose
// connection is still busy, or whose generator woke late, goes out late,
// and its latency counts from when it was due, so a server that falls
// behind shows in the percentiles instead of slowing the load down (the
// coordinated omission of closed-loop generators).
func (l *load) drive(d time.Duration, res *Result) *Result {
	type worker struct {
		lat      []time.Duration
		errs     int
		bytes    int64
		firstErr string
	}
	c := len(l.conns)
	ws := make([]worker, c)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range ws {
		w, conn := &ws[i], &l.conns[i]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			var path []byte
			for k := i; ; k += c {
				due := time.Now()
				if l.rate > 0 {
					due = start.Add(time.Duration(float64(k) / l.rate * float64(time.Second)))
					if !due.Before(deadline) {
						return
					}
					if wait := time.Until(due); wait > 0 {
						time.Sleep(wait)
					}
				} else if !due.Before(deadline) {
					return
				}
				path = append(append(path[:0], l.path...), l.ids[rng.IntN(len(l.ids))]...)
				n, err := conn.get(string(path))
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					continue
				}
				w.lat = append(w.lat, time.Since(due))
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
	res.Requests, res.Seconds, res.Conns, res.Rate = len(all), elapsed.Seconds(), c, l.rate
	res.ReqPerSec = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		res.MeanBytes = float64(bytes) / float64(len(all))
		res.P50ms, res.P90ms = pct(all, 0.50), pct(all, 0.90)
		res.P99ms, res.P999ms = pct(all, 0.99), pct(all, 0.999)
		res.MaxMs = ms(all[len(all)-1])
	}
	return res
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
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// framed as ferry frames its answers, with a Content-Length
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", length)
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
