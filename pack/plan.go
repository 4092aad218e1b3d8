package pack

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Plan is a pack's plan as recorded: the tree it packs, its settings, and
// how many CAR jobs the walk's files and parts were grouped into. The
// walk's entries are recorded beside it, in walk order, and each job's
// parts in a file of its own.
type Plan struct {
	Version  int      `json:"version"`
	ID       string   `json:"id"`
	Source   string   `json:"source"`
	Settings Settings `json:"settings"`
	Jobs     int      `json:"jobs"`
	Files    int      `json:"files"`
	Dirs     int      `json:"dirs"`
	Symlinks int      `json:"symlinks"`
	Bytes    uint64   `json:"bytes"`
	Skipped  []Skip   `json:"skipped"`
}

// Job is one data CAR to build: parts of files, in walk order. It says
// everything a worker needs.
type Job struct {
	Plan   string `json:"plan"`
	Index  int    `json:"index"`
	Source string `json:"source"`
	// Out is the pack's output directory; the CAR is written under its
	// state directory and renamed into it when recorded.
	Out    string `json:"out"`
	SHA256 bool   `json:"sha256,omitempty"`
	Parts  []Part `json:"parts"`
}

// Part is a range of a file, the whole file for most.
type Part struct {
	Path    string `json:"path"`
	Size    uint64 `json:"size"` // the file's, as walked
	ModTime int64  `json:"mtime"`
	Offset  uint64 `json:"offset"`
	Length  uint64 `json:"length"`
}

// Whole is a part that is its whole file.
func (p Part) Whole() bool { return p.Offset == 0 && p.Length == p.Size }

// planEntry is an entry of the recorded walk: a file names the jobs of
// its parts.
type planEntry struct {
	Entry
	Jobs []int `json:"jobs,omitempty"`
}

// estimate bounds the bytes a part adds to its CAR: its content, each
// leaf's CID and frame (39 bytes), the file nodes above (about 60 bytes
// per leaf), and its listing entry.
func estimate(p Part) uint64 {
	leaves := max(1, (p.Length+ChunkSize-1)/ChunkSize)
	return p.Length + 100*leaves + uint64(len(p.Path)) + 128
}

// planner groups the walk's files into jobs as they come: a file larger
// than the shard size is cut into shard-size parts, and a job takes parts
// in walk order until the next would pass the CAR size.
type planner struct {
	s      Settings
	st     *state
	plan   *Plan
	job    *Job
	bytes  uint64 // the job's estimate
	walk   *bufio.Writer
	digest io.Writer
}

func makePlan(ctx context.Context, st *state, source string, s Settings) (*Plan, error) {
	f, err := os.Create(st.path("entries.jsonl.tmp"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	fmt.Fprintf(h, "ferry-pack 1\n%s\n", source)
	json.NewEncoder(h).Encode(s)
	p := &planner{s: s, st: st, plan: &Plan{Version: 1, Source: source, Settings: s, Skipped: []Skip{}}}
	p.walk = bufio.NewWriterSize(io.MultiWriter(f, h), 1<<16)
	err = Walk(ctx, source, s, p.add, func(sk Skip) { p.plan.Skipped = append(p.plan.Skipped, sk) })
	if err == nil {
		err = p.close()
	}
	if err == nil {
		err = p.walk.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return nil, err
	}
	for _, sk := range p.plan.Skipped {
		fmt.Fprintf(h, "skip %q %q\n", sk.Path, sk.Reason)
	}
	p.plan.ID = hex.EncodeToString(h.Sum(nil))[:16]
	if err := os.Rename(st.path("entries.jsonl.tmp"), st.path("entries.jsonl")); err != nil {
		return nil, err
	}
	// The plan's own record last: its presence says the rest is whole.
	return p.plan, st.writeJSON("plan.json", p.plan)
}

func (p *planner) add(e Entry) error {
	pe := planEntry{Entry: e}
	switch e.Type {
	case TypeFile:
		p.plan.Files++
		p.plan.Bytes += e.Size
		for off := uint64(0); ; {
			n := min(e.Size-off, p.s.ShardSize)
			part := Part{Path: e.Path, Size: e.Size, ModTime: e.ModTime, Offset: off, Length: n}
			idx, err := p.place(part)
			if err != nil {
				return err
			}
			pe.Jobs = append(pe.Jobs, idx)
			off += n
			if off >= e.Size {
				break
			}
		}
	case TypeDirectory:
		p.plan.Dirs++
	case TypeSymlink:
		p.plan.Symlinks++
	}
	b, err := json.Marshal(pe)
	if err != nil {
		return err
	}
	p.walk.Write(b)
	return p.walk.WriteByte('\n')
}

// place puts a part in the open job, or in a new one when it would pass
// the CAR size, and returns the job's index.
func (p *planner) place(part Part) (int, error) {
	est := estimate(part)
	if p.job != nil && p.bytes+est > p.s.CarSize {
		if err := p.close(); err != nil {
			return 0, err
		}
	}
	if p.job == nil {
		p.plan.Jobs++
		p.job = &Job{Index: p.plan.Jobs}
		p.bytes = 1024 // header and listing root
	}
	p.job.Parts = append(p.job.Parts, part)
	p.bytes += est
	return p.job.Index, nil
}

// close records the open job. Jobs are recorded without the plan's id,
// source and output directory, which loadJob fills in.
func (p *planner) close() error {
	if p.job == nil {
		return nil
	}
	err := p.st.writeJSON(jobName(p.job.Index), p.job)
	p.job = nil
	return err
}

func jobName(i int) string  { return fmt.Sprintf("jobs/%06d.json", i) }
func doneName(i int) string { return fmt.Sprintf("done/%06d.json", i) }
func tmpName(i int) string  { return fmt.Sprintf("tmp/%06d.car", i) }
