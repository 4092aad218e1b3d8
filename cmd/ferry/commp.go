package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/carcheck"
)

// progressMin is the input size above which a terminal gets a progress line.
const progressMin = 64 << 20

// runCommp implements `ferry commp FILE|URL|-`: one pass over a CAR that
// verifies it and prints its piece CIDs, sizes, md5 and roots. A bad CAR
// is an error carrying the reason.
func runCommp(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("commp", "commp [flags] FILE|URL|-", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object, keyed like a car.replicated event")
	var expectSize, maxSize size
	fs.Var(&expectSize, "expect-size", "fail unless the CAR is exactly this `size`")
	fs.Var(&maxSize, "max-size", "fail when the CAR is larger than this `size` (0: no limit)")
	expectMD5 := fs.String("expect-md5", "", "fail unless the CAR's md5 is this `hex`")
	timeout := fs.Duration("timeout", 0, "give up on a URL after this long (0: never)")
	stall := fs.Duration("stall-timeout", carcheck.DefaultStallTimeout, "give up on a URL that sends nothing for this long")
	policyFlags := fetchPolicyFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	policy, err := policyFlags.policy()
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: commp takes one FILE, URL or -", errUsage)
	}
	src := commpSource{
		name:   fs.Arg(0),
		stdin:  stdin,
		stderr: stderr,
		check:  carcheck.CheckOptions{ExpectSize: uint64(expectSize), MaxSize: uint64(maxSize), ExpectMD5: *expectMD5},
		fetch:  carcheck.FetchOptions{Timeout: *timeout, StallTimeout: *stall, Policy: policy},
	}
	res, err := src.run(ctx)
	if err != nil {
		return fmt.Errorf("commp %s: %w", src.name, err)
	}
	if *asJSON {
		return printJSON(stdout, commpJSON(res))
	}
	return printCommp(stdout, res)
}

// commpSource is where commp reads a CAR from and what it holds it to.
type commpSource struct {
	name   string
	stdin  io.Reader
	stderr io.Writer
	check  carcheck.CheckOptions
	fetch  carcheck.FetchOptions
}

func (s commpSource) run(ctx context.Context) (*carcheck.Result, error) {
	path := s.name
	switch {
	case s.name == "-":
		return s.checkReader(ctx, s.stdin, -1)
	case strings.HasPrefix(s.name, "file://"):
		// A file URL is a FILE: commp reads the caller's own files, unlike
		// a piece worker, which fetches only http(s).
		u, err := url.Parse(s.name)
		if err != nil || (u.Host != "" && u.Host != "localhost") {
			return nil, fmt.Errorf("%w: want file:///path", carcheck.ErrUnsupportedURL)
		}
		path = u.Path
	case isURL(s.name):
		return s.checkURL(ctx)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return s.checkReader(ctx, f, size)
}

func isURL(s string) bool {
	for _, scheme := range []string{"http://", "https://"} {
		if strings.HasPrefix(s, scheme) {
			return true
		}
	}
	return false
}

// checkURL fetches through carcheck.Fetch; with one commpSource its error is that
// commpSource's reason, without the list.
func (s commpSource) checkURL(ctx context.Context) (*carcheck.Result, error) {
	var res *carcheck.Result
	err := carcheck.Fetch(ctx, []string{s.name}, s.fetch, func(body io.Reader, size int64) error {
		var err error
		res, err = s.checkReader(ctx, body, size)
		return err
	})
	if fe := (*carcheck.FetchError)(nil); errors.As(err, &fe) && len(fe.Attempts) == 1 {
		return nil, fe.Last()
	}
	return res, err
}

// checkReader runs carcheck.Check with a progress line for large inputs, and
// stops reading when ctx ends (Ctrl-C on a 32 GiB file).
func (s commpSource) checkReader(ctx context.Context, r io.Reader, size int64) (*carcheck.Result, error) {
	p := startProgress(s.stderr, size, 500*time.Millisecond)
	defer p.stop()
	return carcheck.Check(p.reader(&cancelableReader{ctx: ctx, r: r}), s.check)
}

// cancelableReader fails reads once ctx is done.
type cancelableReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *cancelableReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func printCommp(w io.Writer, res *carcheck.Result) error {
	v2, err := res.Commitment.V2()
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "piece-cid: %s\n", v2)
	fmt.Fprintf(&b, "piece-cid-v1: %s\n", res.Commitment.V1())
	fmt.Fprintf(&b, "padded-size: %d\n", res.Commitment.Padded)
	fmt.Fprintf(&b, "payload-size: %d\n", res.Size)
	fmt.Fprintf(&b, "md5: %s\n", res.MD5)
	fmt.Fprintf(&b, "blocks: %d\n", res.Blocks)
	for _, r := range res.Roots {
		fmt.Fprintf(&b, "root: %s\n", r)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// commpOutput is --json: the fields a car.replicated event takes carry its
// names (piece, pieceSize, size, md5), so they can be pasted into one.
type commpOutput struct {
	Piece     string   `json:"piece"`
	PieceV1   string   `json:"pieceV1"`
	PieceSize uint64   `json:"pieceSize"`
	Size      uint64   `json:"size"`
	MD5       string   `json:"md5"`
	Blocks    int      `json:"blocks"`
	Roots     []string `json:"roots"`
}

func commpJSON(res *carcheck.Result) commpOutput {
	out := commpOutput{
		Piece:     res.Commitment.MustV2().String(),
		PieceV1:   res.Commitment.V1().String(),
		PieceSize: res.Commitment.Padded,
		Size:      res.Size,
		MD5:       res.MD5,
		Blocks:    res.Blocks,
		Roots:     []string{},
	}
	for _, r := range res.Roots {
		out.Roots = append(out.Roots, r.String())
	}
	return out
}

// progressLine draws "commp: 1.2 GiB of 4.0 GiB (30%), 210 MiB/s" on a
// terminal's stderr, redrawing one line, for inputs over progressMin (of
// unknown size: once that much has been read). Elsewhere it does nothing.
type progressLine struct {
	out   io.Writer // nil: disabled
	total int64     // -1 when unknown
	n     atomic.Int64
	start time.Time
	quit  chan struct{}
	wg    sync.WaitGroup
	drawn bool
}

func startProgress(stderr io.Writer, total int64, every time.Duration) *progressLine {
	p := &progressLine{total: total, start: time.Now(), quit: make(chan struct{})}
	if !isTerminal(stderr) || (total >= 0 && total <= progressMin) {
		return p
	}
	p.out = stderr
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.draw()
			}
		}
	})
	return p
}

func (p *progressLine) reader(r io.Reader) io.Reader {
	if p.out == nil {
		return r
	}
	return &countingReader{r: r, n: &p.n}
}

func (p *progressLine) draw() {
	n := p.n.Load()
	if p.total < 0 && n <= progressMin {
		return
	}
	rate := float64(n) / time.Since(p.start).Seconds()
	line := "commp: " + humanMiB(float64(n))
	if p.total > 0 {
		line += fmt.Sprintf(" of %s (%d%%)", humanMiB(float64(p.total)), n*100/p.total)
	}
	fmt.Fprintf(p.out, "\r%s, %s/s\x1b[K", line, humanMiB(rate))
	p.drawn = true
}

// stop ends the drawing and clears the line, leaving stderr as it was.
func (p *progressLine) stop() {
	if p.out == nil {
		return
	}
	close(p.quit)
	p.wg.Wait()
	if p.drawn {
		fmt.Fprint(p.out, "\r\x1b[K")
	}
}

func humanMiB(n float64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", n/(1<<30))
	}
	return fmt.Sprintf("%.0f MiB", n/(1<<20))
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
