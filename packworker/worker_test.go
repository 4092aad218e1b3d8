package packworker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pack"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

const mib = pack.ChunkSize

// writeTree writes a tree of several CARs at 2 MiB each: small files
// first (so the first job has many parts), a file split in three, a
// nested directory, a symlink and an empty file.
func writeTree(t *testing.T, dir string) {
	t.Helper()
	files := map[string]int{
		"a/1.txt": 100, "a/2.txt": 70_000, "a/3.txt": 300_000, "a/4.txt": 5,
		"b/big.bin": 3*mib + 17, "b/c/d.bin": mib + 1, "e.bin": 900_000, "f/empty": 0,
		"g/1.bin": 1_500_000, "g/2.bin": 1_200_000, "h.txt": 12_345,
	}
	seed := uint64(1)
	for name, n := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, ipfstest.Bytes(seed, n), 0o644))
		seed++
	}
	must(t, os.Symlink("a/1.txt", filepath.Join(dir, "latest")))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func settings(t *testing.T) pack.Settings {
	t.Helper()
	s, err := pack.NewSettings(2*mib, mib, false, nil, true)
	must(t, err)
	return s
}

// packWith packs src into out with b.
func packWith(ctx context.Context, t *testing.T, src, out string, b pack.Builder) (*pack.Summary, error) {
	t.Helper()
	return pack.Run(ctx, pack.Options{Source: src, Out: out, Settings: settings(t), Builder: b})
}

// localPack is the reference: the same tree packed in this process.
func localPack(t *testing.T, src string) string {
	t.Helper()
	out := t.TempDir()
	if _, err := packWith(context.Background(), t, src, out, pack.Local{Jobs: 2}); err != nil {
		t.Fatalf("local pack: %v", err)
	}
	return out
}

// sameOutput checks that out holds what want does, manifest and CARs byte
// for byte, that every CAR is named by the CID of its bytes, and that no
// build left a file behind in the state's tmp/.
func sameOutput(t *testing.T, want, out string) {
	t.Helper()
	a, b := testutil.PackOutput(t, want), testutil.PackOutput(t, out)
	if len(a) < 4 || len(a) != len(b) {
		t.Fatalf("%d files, want %d (several CARs and the manifest)", len(b), len(a))
	}
	for name, data := range a {
		if !bytes.Equal(b[name], data) {
			t.Errorf("%s differs from the local pack's (%d bytes, want %d)", name, len(b[name]), len(data))
		}
		if c, ok := strings.CutSuffix(name, ".car"); ok {
			h, err := multihash.Sum(data, multihash.SHA2_256, -1)
			must(t, err)
			if got := cid.NewCidV1(0x0202, h).String(); got != c {
				t.Errorf("%s holds the bytes of CAR %s", name, got)
			}
		}
	}
	left, err := os.ReadDir(filepath.Join(out, pack.StateDir, "tmp"))
	must(t, err)
	for _, e := range left {
		t.Errorf("left in tmp/: %s", e.Name())
	}
}

// builds counts BuildCAR's calls per job and when each began.
type builds struct {
	mu    sync.Mutex
	n     map[int]int
	began map[int]time.Time
	jobs  []pack.Job
}

func newBuilds() *builds { return &builds{n: map[int]int{}, began: map[int]time.Time{}} }

func (b *builds) wrap(p *Pool) {
	p.build = func(ctx context.Context, job pack.Job, prog *pack.Progress) (*pack.Result, error) {
		b.mu.Lock()
		b.n[job.Index]++
		b.began[job.Index] = time.Now()
		b.jobs = append(b.jobs, job)
		b.mu.Unlock()
		return pack.BuildCAR(ctx, job, prog)
	}
}

func (b *builds) counts() map[int]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.n)
}

// once checks that each job was built once.
func once(t *testing.T, counts map[int]int) {
	t.Helper()
	for i, k := range counts {
		if k != 1 {
			t.Errorf("job %d built %d times", i, k)
		}
	}
}

// startPool runs a pool on its own connection to n (another machine's
// worker) until the test ends or its stop is called.
func startPool(t *testing.T, n *testutil.NATS, cfg Config, wrap func(*Pool)) (stop func()) {
	t.Helper()
	_, js := testutil.Connect(t, n.URL())
	if cfg.AckWait == 0 {
		cfg.AckWait = 2 * time.Second
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	p := New(js, cfg)
	if wrap != nil {
		wrap(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("pool: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func coordinator(t *testing.T, n *testutil.NATS) *Coordinator {
	t.Helper()
	_, js := testutil.Connect(t, n.URL())
	return &Coordinator{JS: js, Progress: &pack.Progress{}}
}

// setup writes the test tree, packs it here for reference, and starts
// NATS.
func setup(t *testing.T) (src, want string, n *testutil.NATS) {
	t.Helper()
	src = t.TempDir()
	writeTree(t, src)
	return src, localPack(t, src), testutil.StartNATS(t)
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestTwoWorkersPackAsThisProcessDoes: a pack whose CARs two workers
// build gives the manifest and CARs of a local pack of the tree, each job
// built once, and leaves no result on FERRY_PACK_DONE.
func TestTwoWorkersPackAsThisProcessDoes(t *testing.T) {
	src, want, n := setup(t)
	b := newBuilds()
	startPool(t, n, Config{}, b.wrap)
	startPool(t, n, Config{}, b.wrap)
	c := coordinator(t, n)
	out := t.TempDir()
	sum, err := packWith(timeout(t), t, src, out, c)
	if err != nil {
		t.Fatal(err)
	}
	sameOutput(t, want, out)
	counts := b.counts()
	if len(counts) != sum.Plan.Jobs || sum.Built != sum.Plan.Jobs+1 {
		t.Errorf("jobs built %v, pack built %d: want each of %d once, and the tree CAR", counts, sum.Built, sum.Plan.Jobs)
	}
	once(t, counts)
	if got, want := c.Progress.Files.Load(), int64(sum.Plan.Files); got != want {
		t.Errorf("progress counted %d files, want %d", got, want)
	}
	st, err := n.JS.Stream(context.Background(), jetlog.StreamPackDone)
	must(t, err)
	info, err := st.Info(context.Background())
	must(t, err)
	if info.State.Msgs != 0 {
		t.Errorf("FERRY_PACK_DONE keeps %d results after the pack", info.State.Msgs)
	}
}

// TestAWorkerThatDiesLosesItsJobToAnother: worker A's context ends while
// it builds its first job; the job goes to worker B after the ack wait,
// and the pack comes out as a local one.
func TestAWorkerThatDiesLosesItsJobToAnother(t *testing.T) {
	src, want, n := setup(t)
	const ackWait = 2 * time.Second
	type death struct {
		job int
		at  time.Time
		err error
	}
	died := make(chan death, 1)
	ctxA, killA := context.WithCancel(context.Background())
	defer killA()
	_, jsA := testutil.Connect(t, n.URL())
	a := New(jsA, Config{AckWait: ackWait})
	a.build = func(ctx context.Context, job pack.Job, prog *pack.Progress) (*pack.Result, error) {
		killA()
		r, err := pack.BuildCAR(ctxA, job, prog)
		died <- death{job.Index, time.Now(), err}
		return r, err
	}
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(ctxA) }()

	c := coordinator(t, n)
	out := t.TempDir()
	packed := make(chan error, 1)
	var sum *pack.Summary
	go func() {
		var err error
		sum, err = packWith(timeout(t), t, src, out, c)
		packed <- err
	}()
	var d death
	select {
	case d = <-died:
	case <-time.After(60 * time.Second):
		t.Fatal("worker A took no job")
	}
	if !errors.Is(d.err, context.Canceled) {
		t.Fatalf("worker A's build: %v, want it cut off by its context", d.err)
	}
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	b := newBuilds()
	startPool(t, n, Config{AckWait: ackWait}, b.wrap)
	if err := <-packed; err != nil {
		t.Fatal(err)
	}
	sameOutput(t, want, out)
	counts := b.counts()
	if len(counts) != sum.Plan.Jobs || counts[d.job] != 1 {
		t.Errorf("worker B built %v: want every job once, job %d (A's) too", counts, d.job)
	}
	b.mu.Lock()
	moved := b.began[d.job].Sub(d.at)
	b.mu.Unlock()
	t.Logf("job %d moved to worker B %v after worker A died (ack wait %v)", d.job, moved.Round(time.Millisecond), ackWait)
	if moved < ackWait/2 {
		t.Errorf("job %d moved after %v: before its claim could expire", d.job, moved)
	}
}

// errKilled stands for a pack killed after it recorded one result.
var errKilled = errors.New("killed")

// killAfterOne is a coordinator that stops after its first result.
type killAfterOne struct{ c *Coordinator }

func (k killAfterOne) Build(ctx context.Context, jobs []pack.Job, done func(*pack.Result) error) error {
	return k.c.Build(ctx, jobs, func(r *pack.Result) error {
		if err := done(r); err != nil {
			return err
		}
		return errKilled
	})
}

// TestARestartedPackTakesTheResultsItMissed: a pack stops after one
// result while the workers build the rest; run again, it takes their
// results from FERRY_PACK_DONE and queues nothing: every job is built
// once.
func TestARestartedPackTakesTheResultsItMissed(t *testing.T) {
	src, want, n := setup(t)
	b := newBuilds()
	startPool(t, n, Config{}, b.wrap)
	out := t.TempDir()
	_, err := packWith(timeout(t), t, src, out, killAfterOne{coordinator(t, n)})
	if !errors.Is(err, errKilled) {
		t.Fatalf("first run: %v, want it killed", err)
	}
	plan := readPlan(t, out)
	testutil.Eventually(t, 60*time.Second, "every job built", func() bool { return len(b.counts()) == plan.Jobs })
	done := func() uint64 {
		st, err := n.JS.Stream(context.Background(), jetlog.StreamPackDone)
		must(t, err)
		info, err := st.Info(context.Background())
		must(t, err)
		return info.State.Msgs
	}
	testutil.Eventually(t, 30*time.Second, "every result published", func() bool { return done() == uint64(plan.Jobs) })

	sum, err := packWith(timeout(t), t, src, out, coordinator(t, n))
	if err != nil {
		t.Fatal(err)
	}
	sameOutput(t, want, out)
	once(t, b.counts())
	if sum.Built != plan.Jobs {
		t.Errorf("the second run recorded %d CARs, want the %d it missed and the tree CAR", sum.Built, plan.Jobs)
	}
	if m := done(); m != 0 {
		t.Errorf("FERRY_PACK_DONE keeps %d results after the pack", m)
	}
}

func readPlan(t *testing.T, out string) *pack.Plan {
	t.Helper()
	// The plan's record is the pack's; only its job count is read here.
	var p pack.Plan
	b, err := os.ReadFile(filepath.Join(out, pack.StateDir, "plan.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &p))
	return &p
}

// movingTree is a builder that moves the tree away while its jobs are
// built, as if the workers' machines had it at another path.
type movingTree struct {
	c        *Coordinator
	src, dst string
}

func (m movingTree) Build(ctx context.Context, jobs []pack.Job, done func(*pack.Result) error) error {
	if err := os.Rename(m.src, m.dst); err != nil {
		return err
	}
	defer os.Rename(m.dst, m.src)
	return m.c.Build(ctx, jobs, done)
}

// TestSourceMapAndDeadLetters: with the tree moved, a worker without a
// source map fails every job with a clear reason until it is
// dead-lettered, which fails the pack with that reason; run again with a
// worker mapping the tree (and the output, through a symlink) to where
// they are, the pack completes as a local one and the dead letters are
// gone.
func TestSourceMapAndDeadLetters(t *testing.T) {
	base := t.TempDir()
	src, moved := filepath.Join(base, "tree"), filepath.Join(base, "moved")
	must(t, os.Mkdir(src, 0o755))
	writeTree(t, src)
	want := localPack(t, src)
	n := testutil.StartNATS(t)
	out := t.TempDir()
	blind := startPool(t, n, Config{MaxDeliver: 2, Backoff: []time.Duration{50 * time.Millisecond}}, nil)
	_, err := packWith(timeout(t), t, src, out, movingTree{coordinator(t, n), src, moved})
	if err == nil || !strings.Contains(err.Error(), "ran out of attempts (2)") ||
		!strings.Contains(err.Error(), "the tree "+src+" is not on this machine") || !strings.Contains(err.Error(), "--source-map") {
		t.Fatalf("pack with a worker that lacks the tree: %v, want its dead letter's reason", err)
	}
	blind()
	plan := readPlan(t, out)
	letters, err := workqueue.DeadLetters(context.Background(), n.JS, Queue(jetlog.DefaultSubjects), "")
	must(t, err)
	if len(letters) == 0 || !strings.HasPrefix(letters[0].Key, plan.ID+".") {
		t.Fatalf("dead letters %+v: want the plan's", letters)
	}

	link := filepath.Join(t.TempDir(), "out")
	must(t, os.Symlink(out, link))
	sm, err := ParseSourceMap([]string{src + "=" + moved, out + "=" + link})
	must(t, err)
	b := newBuilds()
	startPool(t, n, Config{SourceMap: sm}, b.wrap)
	if _, err := packWith(timeout(t), t, src, out, movingTree{coordinator(t, n), src, moved}); err != nil {
		t.Fatal(err)
	}
	sameOutput(t, want, out)
	b.mu.Lock()
	for _, j := range b.jobs {
		if j.Source != moved || j.Out != link {
			t.Errorf("job %d built from %s into %s, want %s into %s", j.Index, j.Source, j.Out, moved, link)
		}
	}
	b.mu.Unlock()
	letters, err = workqueue.DeadLetters(context.Background(), n.JS, Queue(jetlog.DefaultSubjects), "")
	must(t, err)
	if len(letters) != 0 {
		t.Errorf("%d dead letters left after the pack ran again", len(letters))
	}
}

func TestSourceMapRewritesLeadingDirectories(t *testing.T) {
	sm, err := ParseSourceMap([]string{"/data=/mnt/data", "/data/photos=/photos", "/=/root/"})
	must(t, err)
	for in, want := range map[string]string{
		"/data":            "/mnt/data",
		"/data/x/y":        "/mnt/data/x/y",
		"/data/photos":     "/photos",
		"/data/photos/a":   "/photos/a",
		"/data/photosynth": "/mnt/data/photosynth",
		"/database":        "/root/database",
		"/":                "/root",
	} {
		if got := sm.Apply(in); got != want {
			t.Errorf("Apply(%s) = %s, want %s", in, got, want)
		}
	}
	if got := (SourceMap{}).Apply("/a/b"); got != "/a/b" {
		t.Errorf("no map: %s", got)
	}
	for _, bad := range [][]string{{"data=/x"}, {"/data"}, {"/data=x"}, {"/a=/b", "/a/=/c"}} {
		if _, err := ParseSourceMap(bad); err == nil {
			t.Errorf("ParseSourceMap(%q) accepted", bad)
		}
	}
}

// TestAnUnreadableJobIsDeadLettered: a job no worker can read ends in a
// dead letter, which a waiting pack sees, not in a dropped item.
func TestAnUnreadableJobIsDeadLettered(t *testing.T) {
	n := testutil.StartNATS(t)
	startPool(t, n, Config{MaxDeliver: 1}, nil)
	q := Queue(jetlog.DefaultSubjects)
	must(t, workqueue.Enqueue(context.Background(), n.JS, q, "0123456789abcdef.1", []byte(`{"plan":"other","index":1}`)))
	var letters []workqueue.DeadLetter
	testutil.Eventually(t, 30*time.Second, "the job dead-lettered", func() bool {
		var err error
		letters, err = workqueue.DeadLetters(context.Background(), n.JS, q, "")
		must(t, err)
		return len(letters) == 1
	})
	if l := letters[0]; l.Key != "0123456789abcdef.1" || !strings.Contains(l.Reason, `unreadable pack job: job other.1 on item "0123456789abcdef.1"`) {
		t.Errorf("dead letter %+v", l)
	}
}
