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
	"path"
	"path/filepath"
	"strings"

	"github.com/ferry-dev/ferry/internal/ctxio"
	"github.com/ipfs/go-cid"
)

// TreeResult is what the tree CAR adds to the data CARs: the CID of
// every directory and symlink, and of every file split across CARs, and
// the files left out.
type TreeResult struct {
	Dirs     []Named `json:"dirs"`
	Symlinks []Named `json:"symlinks"`
	// Split are the files the tree CAR joined from their parts.
	Split   []Named `json:"split"`
	Skipped []Skip  `json:"skipped"`
}

// Named is a path's CID (and, for a split file with --sha256, its
// SHA-256).
type Named struct {
	Path   string `json:"path"`
	CID    string `json:"cid"`
	SHA256 string `json:"sha256,omitempty"`
}

// walkRecord reads the recorded walk in order, with each file's part
// results from the data CARs' records, also in order.
type walkRecord struct {
	st    *state
	dec   *json.Decoder
	f     *os.File
	job   int
	files []FileResult
}

func (st *state) openWalk() (*walkRecord, error) {
	f, err := os.Open(st.path("entries.jsonl"))
	if err != nil {
		return nil, err
	}
	return &walkRecord{st: st, f: f, dec: json.NewDecoder(bufio.NewReaderSize(f, 1<<16))}, nil
}

func (w *walkRecord) Close() error { return w.f.Close() }

// next returns the next entry and, for a file, its parts' results; io.EOF
// at the end.
func (w *walkRecord) next() (planEntry, []FileResult, error) {
	var e planEntry
	if err := w.dec.Decode(&e); err != nil {
		return e, nil, err
	}
	var parts []FileResult
	for _, j := range e.Jobs {
		for w.job != j || len(w.files) == 0 {
			if w.job == j && len(w.files) == 0 {
				return e, nil, fmt.Errorf("the record of CAR %d ends before %s", j, e.Path)
			}
			var r Result
			ok, err := w.st.readJSON(doneName(j), &r)
			if err != nil {
				return e, nil, err
			}
			if !ok {
				return e, nil, fmt.Errorf("CAR %d is not recorded", j)
			}
			w.job, w.files = j, r.Files
		}
		fr := w.files[0]
		w.files = w.files[1:]
		if fr.Path != e.Path {
			return e, nil, fmt.Errorf("the record of CAR %d has %s where the walk has %s", j, fr.Path, e.Path)
		}
		parts = append(parts, fr)
	}
	return e, parts, nil
}

// skipReason is why a file's parts leave it out, if they do.
func skipReason(parts []FileResult) string {
	for _, p := range parts {
		if p.Skipped != "" {
			return p.Skipped
		}
	}
	return ""
}

// buildTree builds the tree CAR: every directory and symlink node, and
// the nodes above the parts of split files, from the recorded walk and
// the data CARs' records.
func buildTree(ctx context.Context, st *state, plan *Plan) (*Result, error) {
	name := st.path(tmpName(0))
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cw, err := newCARWriter(f)
	if err != nil {
		return nil, err
	}
	defer cw.close()
	sink := func(b Block) error { _, err := cw.put(b); return err }
	w, err := st.openWalk()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	tr := &TreeResult{Dirs: []Named{}, Symlinks: []Named{}, Split: []Named{}, Skipped: []Skip{}}
	var stack []dirFrame
	// pop finishes the innermost directory and adds it to its parent.
	pop := func() error {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		l, err := top.dir.Finish(ctx)
		if err != nil {
			return fmt.Errorf("directory %q: %w", top.path, err)
		}
		tr.Dirs = append(tr.Dirs, Named{Path: top.path, CID: l.CID.String()})
		if len(stack) == 0 {
			return nil
		}
		return stack[len(stack)-1].dir.Add(ctx, path.Base(top.path), l)
	}
	var root cid.Cid
	for {
		e, parts, err := w.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for len(stack) > 0 && !within(e.Path, stack[len(stack)-1].path) {
			if err := pop(); err != nil {
				return nil, err
			}
		}
		if e.Path != "" && len(stack) == 0 {
			return nil, fmt.Errorf("the recorded walk has %s outside the tree", e.Path)
		}
		var l Link
		switch e.Type {
		case TypeDirectory:
			stack = append(stack, dirFrame{path: e.Path, dir: NewDir(sink)})
			continue
		case TypeSymlink:
			if l, err = Symlink(e.Target, sink); err != nil {
				return nil, err
			}
			tr.Symlinks = append(tr.Symlinks, Named{Path: e.Path, CID: l.CID.String()})
		case TypeFile:
			if why := skipReason(parts); why != "" {
				tr.Skipped = append(tr.Skipped, Skip{Path: e.Path, Reason: why})
				continue
			}
			var ok bool
			if l, ok, err = joinFile(ctx, plan, e, parts, sink, tr); err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		default:
			return nil, fmt.Errorf("the recorded walk has %s of type %q", e.Path, e.Type)
		}
		if err := stack[len(stack)-1].dir.Add(ctx, path.Base(e.Path), l); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
	}
	for len(stack) > 0 {
		if err := pop(); err != nil {
			return nil, err
		}
	}
	for _, d := range tr.Dirs {
		if d.Path == "" {
			root, _ = cid.Decode(d.CID)
		}
	}
	if !root.Defined() {
		return nil, fmt.Errorf("the recorded walk has no root directory")
	}
	if err := cw.finish(root); err != nil {
		return nil, err
	}
	res := &Result{Index: 0, Kind: KindTree, Root: root.String(), Tree: tr}
	return res, describe(f, res)
}

type dirFrame struct {
	path string
	dir  *Dir
}

// within says whether p is inside the directory dir ("" is the root).
func within(p, dir string) bool {
	return dir == "" || strings.HasPrefix(p, dir+"/")
}

// joinFile is the link of a file from its parts' results: a whole file's
// own, or the root the tree CAR builds over a split file's parts. ok is
// false when the file was left out here.
func joinFile(ctx context.Context, plan *Plan, e planEntry, parts []FileResult, sink Sink, tr *TreeResult) (Link, bool, error) {
	if len(parts) == 1 && parts[0].CID != "" {
		c, err := cid.Decode(parts[0].CID)
		return Link{CID: c, Tsize: parts[0].Tsize, Size: e.Size}, err == nil, err
	}
	dag := NewFileDAG(0, sink)
	for _, p := range parts {
		for _, l := range p.Links {
			if err := dag.Add(l); err != nil {
				return Link{}, false, fmt.Errorf("%s: %w", e.Path, err)
			}
		}
	}
	root, err := dag.Root()
	if err != nil {
		return Link{}, false, fmt.Errorf("%s: %w", e.Path, err)
	}
	n := Named{Path: e.Path, CID: root.CID.String()}
	if plan.Settings.SHA256 {
		// A split file's parts are hashed apart, on any machine: its
		// SHA-256 takes one more read of the file.
		sum, why := fileSHA256(ctx, filepath.Join(plan.Source, filepath.FromSlash(e.Path)), e.Entry)
		if why != "" {
			tr.Skipped = append(tr.Skipped, Skip{Path: e.Path, Reason: why})
			return Link{}, false, nil
		}
		n.SHA256 = sum
	}
	tr.Split = append(tr.Split, n)
	return root, true, nil
}

func fileSHA256(ctx context.Context, name string, e Entry) (string, string) {
	f, err := os.Open(name)
	if err != nil {
		return "", err.Error()
	}
	defer f.Close()
	p := Part{Path: e.Path, Size: e.Size, ModTime: e.ModTime, Length: e.Size}
	if why := changed(f, p); why != "" {
		return "", why
	}
	h := sha256.New()
	if n, err := io.Copy(h, ctxio.Reader(ctx, io.LimitReader(f, int64(e.Size)))); err != nil || uint64(n) != e.Size {
		if ctx.Err() != nil {
			return "", ctx.Err().Error()
		}
		return "", fmt.Sprintf("changed while packed: read %d of %d bytes (%v)", n, e.Size, err)
	}
	if why := changed(f, p); why != "" {
		return "", why
	}
	return hex.EncodeToString(h.Sum(nil)), ""
}
