package pack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Builder builds a pack's CAR jobs: this process's goroutines (Local) or
// pack workers through a work queue. done is called with each finished
// job's Result, one call at a time; an error from it stops Build.
type Builder interface {
	Build(ctx context.Context, jobs []Job, done func(*Result) error) error
}

// Options of a pack.
type Options struct {
	Source, Out string
	Settings    Settings
	// Builder builds the data CARs; nil is Local with a job per core.
	Builder Builder
	// Publish, when set, is called with each finished CAR, once the CAR
	// is in Out, and its URL; a CAR is published until Publish returns
	// nil once, across runs.
	Publish func(ctx context.Context, r *Result, url string) error
	// URL is a CAR's URL by its CAR CID, for the manifest and Publish.
	URL      func(car string) string
	Progress *Progress
}

// Summary is what a pack did.
type Summary struct {
	Plan *Plan
	Root string
	// Results are the data CARs' then the tree CAR's, without their
	// per-file records (those are in the manifest).
	Results []*Result
	// Built counts the CARs this run built (the others were recorded).
	Built    int
	Skipped  []Skip
	Manifest string
}

// Run packs opts.Source into opts.Out: it makes or resumes the plan,
// builds the CARs not yet recorded, then the tree CAR, and writes the
// manifest.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	if err := opts.Settings.Validate(); err != nil {
		return nil, err
	}
	src, out, err := paths(opts.Source, opts.Out)
	if err != nil {
		return nil, err
	}
	if opts.Builder == nil {
		opts.Builder = Local{Jobs: runtime.NumCPU(), Progress: opts.Progress}
	}
	st, err := openState(out)
	if err != nil {
		return nil, err
	}
	plan, err := loadOrMakePlan(ctx, st, src, opts.Settings)
	if err != nil {
		return nil, err
	}
	opts.Progress.planned(plan)
	// Builds a kill interrupted leave their files behind (BuildCAR's
	// temp names); a builder still running meanwhile fails its rename and
	// is retried.
	if stale, err := filepath.Glob(st.path("tmp/*.car.*")); err == nil {
		for _, name := range stale {
			os.Remove(name)
		}
	}
	p := &packer{opts: opts, st: st, plan: plan, results: make([]*Result, plan.Jobs+1)}
	var pending []Job
	for i := 1; i <= plan.Jobs; i++ {
		ok, err := p.recorded(ctx, i)
		if err != nil {
			return nil, err
		}
		if !ok {
			job, err := st.loadJob(plan, i)
			if err != nil {
				return nil, err
			}
			pending = append(pending, job)
		}
	}
	if len(pending) > 0 {
		if err := opts.Builder.Build(ctx, pending, func(r *Result) error { return p.finish(ctx, r) }); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= plan.Jobs; i++ {
		if p.results[i] == nil {
			return nil, fmt.Errorf("CAR %d was not built", i)
		}
	}
	// The tree CAR follows from the data CARs: one recorded before a data
	// CAR had to be built again is built again too.
	ok := false
	if len(pending) == 0 {
		if ok, err = p.recorded(ctx, 0); err != nil {
			return nil, err
		}
	}
	if !ok {
		tree, err := buildTree(ctx, st, plan)
		if err != nil {
			return nil, fmt.Errorf("tree CAR: %w", err)
		}
		if err := p.finish(ctx, tree); err != nil {
			return nil, err
		}
	}
	tree := p.results[0]
	data := p.results[1:]
	if err := writeManifest(st, plan, data, tree, opts.URL); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &Summary{
		Plan: plan, Root: tree.Root, Results: append(append([]*Result{}, data...), tree),
		Built: p.built, Skipped: append(append([]Skip{}, plan.Skipped...), tree.Tree.Skipped...),
		Manifest: filepath.Join(out, "manifest.json"),
	}, nil
}

// paths are the absolute source and output directories; the output may
// not be inside the tree, which would pack itself.
func paths(source, out string) (string, string, error) {
	src, err := filepath.Abs(source)
	if err != nil {
		return "", "", err
	}
	dst, err := filepath.Abs(out)
	if err != nil {
		return "", "", err
	}
	if out == "" {
		return "", "", errors.New("no output directory")
	}
	if real, err := filepath.EvalSymlinks(src); err == nil {
		src = real
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", "", err
	}
	if real, err := filepath.EvalSymlinks(dst); err == nil {
		dst = real
	}
	if dst == src || strings.HasPrefix(dst, src+string(filepath.Separator)) {
		return "", "", fmt.Errorf("the output directory %s is inside the tree %s", dst, src)
	}
	return src, dst, nil
}

func loadOrMakePlan(ctx context.Context, st *state, src string, s Settings) (*Plan, error) {
	var plan Plan
	ok, err := st.readJSON("plan.json", &plan)
	if err != nil {
		return nil, err
	}
	if !ok {
		return makePlan(ctx, st, src, s)
	}
	a, _ := json.Marshal(plan.Settings)
	b, _ := json.Marshal(s)
	if plan.Source != src || string(a) != string(b) {
		return nil, fmt.Errorf("%w: %s packs %s with %s; this run asks for %s with %s",
			ErrOtherPack, st.out, plan.Source, a, src, b)
	}
	return &plan, nil
}

func (st *state) loadJob(plan *Plan, i int) (Job, error) {
	var job Job
	ok, err := st.readJSON(jobName(i), &job)
	if err == nil && !ok {
		err = fmt.Errorf("job %d of the plan is missing", i)
	}
	job.Plan, job.Source, job.Out, job.SHA256 = plan.ID, plan.Source, st.out, plan.Settings.SHA256
	return job, err
}

type packer struct {
	opts    Options
	st      *state
	plan    *Plan
	mu      sync.Mutex
	results []*Result
	built   int
}

// recorded says whether CAR i is recorded and in the output directory,
// moving it there from its temp name if a run stopped in between, and
// publishing it if that is still to do.
func (p *packer) recorded(ctx context.Context, i int) (bool, error) {
	var r Result
	ok, err := p.st.readJSON(doneName(i), &r)
	if err != nil || !ok {
		return false, err
	}
	if err := p.place(&r); errors.Is(err, fs.ErrNotExist) {
		// Recorded, but its file is gone: build it again.
		return false, os.Remove(p.st.path(doneName(i)))
	} else if err != nil {
		return false, err
	}
	p.results[i] = r.brief()
	p.opts.Progress.addCar(&r)
	p.opts.Progress.AddBuilt(&r)
	return true, p.publish(ctx, &r)
}

// brief is r without its per-file records, which stay on disk in its
// record: the manifest streams them from there, so a pack holds one
// CAR's records at a time, not the tree's.
func (r *Result) brief() *Result {
	b := *r
	b.Files = nil
	return &b
}

// addCar counts a data CAR done.
func (p *Progress) addCar(r *Result) {
	if p == nil || r.Kind != KindData {
		return
	}
	p.Cars.Add(1)
}

// AddBuilt counts the files and bytes of a CAR built elsewhere: by an
// earlier run, or by a pack worker (BuildCAR counts its own as it goes).
func (p *Progress) AddBuilt(r *Result) {
	if p == nil {
		return
	}
	for _, f := range r.Files {
		if f.Skipped == "" {
			p.add(btoi(f.Offset+f.Length == f.Size), int64(f.Length))
		}
	}
}

// finish records a built CAR, moves it into the output directory and
// publishes it.
func (p *packer) finish(ctx context.Context, r *Result) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Index < 0 || r.Index > p.plan.Jobs {
		return fmt.Errorf("a result for CAR %d, which the plan does not have", r.Index)
	}
	if err := p.st.writeJSON(doneName(r.Index), r); err != nil {
		return err
	}
	if err := p.place(r); err != nil {
		return err
	}
	p.results[r.Index] = r.brief()
	p.built++
	p.opts.Progress.addCar(r)
	return p.publish(ctx, r)
}

// place moves CAR r from its temp name to <out>/<car cid>.car, unless it
// is there already.
func (p *packer) place(r *Result) error {
	final := filepath.Join(p.st.out, r.Car+".car")
	tmp := p.st.path(tmpName(r.Index))
	if fi, err := os.Stat(final); err == nil && uint64(fi.Size()) == r.Size {
		os.Remove(tmp)
		return nil
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(p.st.out)
}

func (p *packer) publish(ctx context.Context, r *Result) error {
	if p.opts.Publish == nil {
		return nil
	}
	mark := fmt.Sprintf("published/%06d", r.Index)
	if p.st.exists(mark) {
		return nil
	}
	url := ""
	if p.opts.URL != nil {
		url = p.opts.URL(r.Car)
	}
	if err := p.opts.Publish(ctx, r, url); err != nil {
		return fmt.Errorf("publish CAR %d (%s): %w", r.Index, r.Car, err)
	}
	return writeFileAtomic(p.st.path(mark), nil)
}

// Local builds jobs on this process's goroutines, Jobs at once.
type Local struct {
	Jobs     int
	Progress *Progress
}

// Build runs BuildCAR on each job; the first error stops the others.
func (l Local) Build(ctx context.Context, jobs []Job, done func(*Result) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan Job)
	var wg sync.WaitGroup
	for range max(1, l.Jobs) {
		wg.Go(func() {
			for job := range work {
				r, err := BuildCAR(ctx, job, l.Progress)
				if err == nil {
					err = done(r)
				}
				if err != nil {
					cancel(fmt.Errorf("CAR %d: %w", job.Index, err))
					return
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}
