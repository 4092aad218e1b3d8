package pack

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Entry types.
const (
	TypeFile      = "file"
	TypeDirectory = "directory"
	TypeSymlink   = "symlink"
)

// Entry is one thing of the tree, as the walk found it.
type Entry struct {
	// Path is slash-separated and relative to the tree's root, which is "".
	Path    string `json:"path"`
	Type    string `json:"type"`
	Size    uint64 `json:"size,omitempty"`
	ModTime int64  `json:"mtime,omitempty"` // nanoseconds since 1970
	Target  string `json:"target,omitempty"`
}

// Skip is an entry left out, and why.
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Walk calls fn with every entry of the tree at root in walk order: a
// directory before its entries, entries by name in byte order, so paths
// sort component by component. Entries the settings leave out are not
// seen; entries that cannot be walked (an unreadable directory, a special
// file, a name that is not UTF-8) go to skip.
func Walk(ctx context.Context, root string, s Settings, fn func(Entry) error, skip func(Skip)) error {
	fi, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", root)
	}
	w := walker{ctx: ctx, root: root, s: s, fn: fn, skip: skip}
	names, err := w.read("")
	if err != nil {
		return fmt.Errorf("%s: %w", root, err)
	}
	if err := fn(Entry{Path: "", Type: TypeDirectory}); err != nil {
		return err
	}
	return w.dir("", names)
}

type walker struct {
	ctx  context.Context
	root string
	s    Settings
	fn   func(Entry) error
	skip func(Skip)
}

func (w *walker) read(rel string) ([]fs.DirEntry, error) {
	return os.ReadDir(filepath.Join(w.root, filepath.FromSlash(rel)))
}

func (w *walker) dir(rel string, names []fs.DirEntry) error {
	for _, d := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		p := path.Join(rel, d.Name())
		if w.leftOut(d.Name(), p) {
			continue
		}
		if !utf8.ValidString(d.Name()) {
			w.skip(Skip{Path: strings.ToValidUTF8(p, "\uFFFD"), Reason: "name is not valid UTF-8"})
			continue
		}
		if err := w.entry(p, d); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) entry(p string, d fs.DirEntry) error {
	full := filepath.Join(w.root, filepath.FromSlash(p))
	info, err := d.Info()
	if err != nil {
		w.skip(Skip{Path: p, Reason: err.Error()})
		return nil
	}
	switch m := info.Mode(); {
	case m.IsRegular():
		return w.fn(Entry{Path: p, Type: TypeFile, Size: uint64(info.Size()), ModTime: info.ModTime().UnixNano()})
	case m.IsDir():
		names, err := w.read(p)
		if err != nil {
			w.skip(Skip{Path: p, Reason: err.Error()})
			return nil
		}
		if err := w.fn(Entry{Path: p, Type: TypeDirectory}); err != nil {
			return err
		}
		return w.dir(p, names)
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(full)
		if err != nil {
			w.skip(Skip{Path: p, Reason: err.Error()})
			return nil
		}
		if !utf8.ValidString(target) {
			w.skip(Skip{Path: p, Reason: "symlink target is not valid UTF-8"})
			return nil
		}
		return w.fn(Entry{Path: p, Type: TypeSymlink, Target: target})
	default:
		w.skip(Skip{Path: p, Reason: fmt.Sprintf("not a file, directory or symlink (%s)", m.Type())})
		return nil
	}
}

// leftOut is the settings' filter: hidden names unless asked for, and
// names or paths an exclude pattern matches.
func (w *walker) leftOut(name, p string) bool {
	if !w.s.Hidden && strings.HasPrefix(name, ".") {
		return true
	}
	for _, g := range w.s.Exclude {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
		if ok, _ := path.Match(g, p); ok {
			return true
		}
	}
	return false
}
