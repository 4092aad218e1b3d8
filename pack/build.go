package pack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/ferry-dev/ferry/carcheck"
)

// Result is a built CAR as recorded: what the manifest and the tree CAR
// need of it.
type Result struct {
	Index     int    `json:"index"`
	Kind      string `json:"kind"` // KindData or KindTree
	Car       string `json:"car"`
	Root      string `json:"root"`
	Size      uint64 `json:"size"`
	MD5       string `json:"md5"`
	Piece     string `json:"piece"`
	PieceSize uint64 `json:"piece_size"`
	Blocks    int    `json:"blocks"`
	// Files are a data CAR's parts in job order (skipped ones too).
	Files []FileResult `json:"files,omitempty"`
	// Tree is the tree CAR's account of the tree.
	Tree *TreeResult `json:"tree,omitempty"`
}

// CAR kinds.
const (
	KindData = "data"
	KindTree = "tree"
)

// FileResult is a part of a file as a data CAR holds it.
type FileResult struct {
	Path   string `json:"path"`
	Size   uint64 `json:"size"`
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	// CID is a whole file's; a part's subtrees are Links, joined by the
	// tree CAR.
	CID   string `json:"cid,omitempty"`
	Tsize uint64 `json:"tsize,omitempty"`
	Links []Link `json:"links,omitempty"`
	// CarOffset and CarLength are the bytes of the CAR that hold the
	// part's blocks.
	CarOffset uint64 `json:"car_offset"`
	CarLength uint64 `json:"car_length"`
	SHA256    string `json:"sha256,omitempty"`
	// Skipped says why the part is not in the CAR.
	Skipped string `json:"skipped,omitempty"`
}

// Progress counts a pack's work as it goes; every field is read and
// written atomically.
type Progress struct {
	// Files, Bytes and Cars are done; the totals are the plan's, set once
	// it is made or loaded.
	Files, Bytes, Cars                atomic.Int64
	TotalFiles, TotalBytes, TotalCars atomic.Int64
}

func (p *Progress) planned(plan *Plan) {
	if p != nil {
		p.TotalFiles.Store(int64(plan.Files))
		p.TotalBytes.Store(int64(plan.Bytes))
		p.TotalCars.Store(int64(plan.Jobs))
	}
}

func (p *Progress) add(files int, bytes int64) {
	if p != nil {
		p.Files.Add(int64(files))
		p.Bytes.Add(bytes)
	}
}

// changedError is a file found changed after some of its blocks were
// written: the CAR is built again without it.
type changedError struct{ path, reason string }

func (e *changedError) Error() string { return e.path + ": " + e.reason }

// BuildCAR builds job's CAR into <out>/.ferry-pack/tmp/<index>.car and
// returns its Result; the caller records it and renames the file. A file
// that cannot be read, or is found changed since the walk, is left out
// (its FileResult says why); one found changed once its blocks were
// written makes BuildCAR start the CAR again without it.
func BuildCAR(ctx context.Context, job Job, prog *Progress) (*Result, error) {
	skip := map[string]string{}
	for {
		var files int
		var bytes int64
		res, err := buildCAR(ctx, job, skip, func(f int, b uint64) { files += f; bytes += int64(b); prog.add(f, int64(b)) })
		var ch *changedError
		if !errors.As(err, &ch) {
			return res, err
		}
		prog.add(-files, -bytes)
		skip[ch.path] = ch.reason
	}
}

func buildCAR(ctx context.Context, job Job, skip map[string]string, count func(int, uint64)) (res *Result, err error) {
	// A file of this build's own, renamed to the job's CAR once whole: a
	// pack worker that lost its claim while still alive may build the
	// job at the same time as the worker that took it over, and neither
	// may write into the other's CAR.
	name := job.CARFile()
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".*")
	if err != nil {
		return nil, err
	}
	// CreateTemp's 0600 would keep a web server of another user from
	// serving the CAR; os.Create gave 0644 under the usual umask.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	defer func() {
		f.Close()
		if err == nil {
			err = os.Rename(f.Name(), name)
		}
		if err != nil {
			os.Remove(f.Name())
			res = nil
		}
	}()
	cw, err := newCARWriter(f)
	if err != nil {
		return nil, err
	}
	defer cw.close()
	sink := func(b Block) error { _, err := cw.put(b); return err }
	l := &listing{sink: sink}
	res = &Result{Index: job.Index, Kind: KindData, Files: make([]FileResult, 0, len(job.Parts))}
	buf := make([]byte, ChunkSize)
	for _, p := range job.Parts {
		fr := FileResult{Path: p.Path, Size: p.Size, Offset: p.Offset, Length: p.Length}
		if why, ok := skip[p.Path]; ok {
			fr.Skipped = why
		} else {
			fr.CarOffset = cw.off
			if err := readPart(ctx, job, p, &fr, buf, sink, l); err != nil {
				var sk *skipError
				if !errors.As(err, &sk) {
					return nil, err
				}
				fr.Skipped = sk.reason
			}
			fr.CarLength = cw.off - fr.CarOffset
			if fr.Skipped != "" {
				fr.CarOffset, fr.CarLength = 0, 0
			} else {
				count(btoi(p.Offset+p.Length == p.Size), p.Length)
			}
		}
		res.Files = append(res.Files, fr)
	}
	root, err := l.root(job.Index)
	if err != nil {
		return nil, err
	}
	if err := cw.finish(root); err != nil {
		return nil, err
	}
	res.Root = root.String()
	return res, describe(f, res)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// skipError leaves a part out before any of its blocks was written.
type skipError struct{ reason string }

func (e *skipError) Error() string { return e.reason }

// readPart reads one part into the CAR through a FileDAG and adds its
// listing entry. A file that cannot be opened or differs from the walk
// before it is read is a *skipError; one that differs after its blocks
// were written is a *changedError.
func readPart(ctx context.Context, job Job, p Part, fr *FileResult, buf []byte, sink Sink, l *listing) error {
	f, err := os.Open(filepath.Join(job.Source, filepath.FromSlash(p.Path)))
	if err != nil {
		return &skipError{reason: err.Error()}
	}
	defer f.Close()
	if why := changed(f, p); why != "" {
		return &skipError{reason: why}
	}
	var sum hash.Hash
	if job.SHA256 {
		sum = sha256.New()
	}
	dag := NewFileDAG(p.Offset/ChunkSize, sink)
	r := io.NewSectionReader(f, int64(p.Offset), int64(p.Length))
	for left := p.Length; left > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(left, ChunkSize)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return &changedError{path: p.Path, reason: fmt.Sprintf("changed while packed: read: %v", err)}
		}
		if sum != nil {
			sum.Write(buf[:n])
		}
		if err := dag.Leaf(buf[:n]); err != nil {
			return err
		}
		if testHookLeaf != nil {
			testHookLeaf(p.Path)
		}
		left -= n
	}
	if why := changed(f, p); why != "" {
		return &changedError{path: p.Path, reason: why}
	}
	if sum != nil {
		fr.SHA256 = hex.EncodeToString(sum.Sum(nil))
	}
	e := listEntry{Path: p.Path, Size: p.Size, Offset: p.Offset, Length: p.Length}
	if p.Whole() {
		root, err := dag.Root()
		if err != nil {
			return err
		}
		fr.CID, fr.Tsize, e.File = root.CID.String(), root.Tsize, root.CID
	} else {
		fr.Links = dag.Part()
		e.Blocks = fr.Links
	}
	return l.add(e)
}

// testHookLeaf, when set by a test, runs after each leaf a part writes.
var testHookLeaf func(path string)

// changed says how f differs from the walk's record of it, if it does.
func changed(f *os.File, p Part) string {
	fi, err := f.Stat()
	switch {
	case err != nil:
		return err.Error()
	case !fi.Mode().IsRegular():
		return "changed while packed: no longer a regular file"
	case uint64(fi.Size()) != p.Size:
		return fmt.Sprintf("changed while packed: size %d, was %d", fi.Size(), p.Size)
	case fi.ModTime().UnixNano() != p.ModTime:
		return "changed while packed: modified"
	}
	return ""
}

// describe makes the finished CAR durable and reads it once for its CAR
// CID, size, md5 and piece, checking every block against its CID on the
// way. The sync runs while the CAR is read back, so that its pages go to
// disk beside the hashing rather than before it, with the cores idle.
func describe(f *os.File, res *Result) error {
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	err := check(f, res)
	if serr := <-synced; err == nil && serr != nil {
		err = fmt.Errorf("sync the CAR: %w", serr)
	}
	return err
}

func check(f *os.File, res *Result) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	c, err := carcheck.Check(f, carcheck.CheckOptions{CARCID: true})
	if err != nil {
		return fmt.Errorf("check the CAR written: %w", err)
	}
	if len(c.Roots) != 1 || c.Roots[0].String() != res.Root {
		return fmt.Errorf("check the CAR written: roots %v, want %s", c.Roots, res.Root)
	}
	res.Car, res.Size, res.MD5, res.Blocks = c.CAR.String(), c.Size, c.MD5, c.Blocks
	res.Piece, res.PieceSize = c.Commitment.V1().String(), c.Commitment.Padded
	return nil
}
