// Package testtree writes deterministic file trees for the packing tests:
// one tree holds every case ferry pack must handle (small, empty, chunk-
// edge, large and split files, empty and nested directories, a directory
// big enough to be a HAMT, a relative symlink, UTF-8 names, hidden and
// unreadable entries).
//
// Its one rule: the same Spec writes the same bytes, names and symlink
// targets on every run and machine, so two trees of one Spec pack to the
// same CARs. Every file's bytes differ from every other's, chunk by chunk,
// so no block repeats in a tree and a test may require each block in
// exactly one CAR.
package testtree

import (
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferry-dev/ferry/internal/ipfstest"
)

// MiB is 2^20 bytes, the profile's chunk.
const MiB = 1 << 20

// Spec says what a tree holds beyond its fixed small entries.
type Spec struct {
	Seed uint64
	// Big is the size of big.bin (0: none): up to 174 MiB kubo 0.32's
	// file CIDs equal the 2025 profile's.
	Big int64
	// Split is the size of split.bin (0: none), meant to be split by a
	// small --shard-size.
	Split int64
	// HAMT is the number of entries of hamt/ (0: none).
	HAMT int
	// Bulk adds bulk/NNN.bin files of BulkSize bytes each (for trees of
	// several CARs without a big file).
	Bulk, BulkSize int
	// Skipped adds the entries a default pack leaves out: hidden ones
	// and an unreadable file.
	Skipped bool
}

// Tree is a written tree.
type Tree struct {
	Dir string
	// Files are the regular files a default pack includes (not hidden,
	// readable), by slash path relative to Dir.
	Files map[string]int64
	// Dirs are the directories (slash paths, "" the root), Symlinks the
	// symlinks and their targets.
	Dirs     []string
	Symlinks map[string]string
	// Hidden are the hidden entries of the top of the tree and of its
	// directories (a default pack leaves them out); Unreadable is the
	// file made unreadable ("" without Spec.Skipped).
	Hidden     []string
	Unreadable string
}

// Fixed names of the tree, for tests that look for one case.
const (
	Empty      = "empty.txt"
	ExactChunk = "chunk/exactly-1MiB.bin"
	OverChunk  = "chunk/1MiB-plus-1.bin"
	BigFile    = "big.bin"
	SplitFile  = "split.bin"
	EmptyDir   = "empty-dir"
	UTF8       = "café/naïve ☃.txt"
	Link       = "nested/link-to-small"
	LinkTarget = "../small/a.txt"
	HAMTDir    = "hamt"
	Secret     = "secret.bin"
	SecretSize = 5000
)

// Write writes the tree of spec into dir (which must not exist or be
// empty).
func Write(dir string, spec Spec) (*Tree, error) {
	t := &Tree{Dir: dir, Files: map[string]int64{}, Symlinks: map[string]string{}}
	files := map[string]int64{
		"small/a.txt":           13,
		"small/b.bin":           4000,
		"small/c.bin":           300_000,
		Empty:                   0,
		ExactChunk:              MiB,
		OverChunk:               MiB + 1,
		"nested/a/b/c/deep.txt": 777,
		"nested/a/mid.bin":      70_000,
		UTF8:                    1234,
		"café/ünïcödé/日本.txt":   99,
	}
	if spec.Big > 0 {
		files[BigFile] = spec.Big
	}
	if spec.Split > 0 {
		files[SplitFile] = spec.Split
	}
	for i := range spec.HAMT {
		// Long names put the directory well above the HAMT threshold in
		// both size estimates (name + CID bytes, or the dag-pb block).
		files[fmt.Sprintf("%s/entry-%05d-with-a-name-long-enough-to-count.txt", HAMTDir, i)] = int64(10 + i%50)
	}
	for i := range spec.Bulk {
		files[fmt.Sprintf("bulk/%03d.bin", i)] = int64(spec.BulkSize)
	}
	for name, size := range files {
		if err := t.file(name, size, spec.Seed); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, EmptyDir), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(LinkTarget, filepath.Join(dir, filepath.FromSlash(Link))); err != nil {
		return nil, err
	}
	t.Symlinks[Link] = LinkTarget
	if spec.Skipped {
		if err := t.skipped(spec.Seed); err != nil {
			return nil, err
		}
	}
	t.dirs()
	return t, nil
}

// skipped writes the hidden entries and the unreadable file.
func (t *Tree) skipped(seed uint64) error {
	for _, name := range []string{".hidden", "small/.dotfile", ".hidden-dir/inside.txt"} {
		if err := t.file(name, 100, seed); err != nil {
			return err
		}
		delete(t.Files, name)
	}
	t.Hidden = []string{".hidden", ".hidden-dir", "small/.dotfile"}
	if err := t.file(Secret, SecretSize, seed); err != nil {
		return err
	}
	delete(t.Files, Secret)
	t.Unreadable = Secret
	return os.Chmod(filepath.Join(t.Dir, Secret), 0)
}

// file writes name with size deterministic bytes and records it.
func (t *Tree) file(name string, size int64, seed uint64) error {
	p := filepath.Join(t.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, Content(name, seed, size)); err != nil {
		f.Close()
		return err
	}
	t.Files[name] = size
	return f.Close()
}

// dirs records every directory a default pack includes.
func (t *Tree) dirs() {
	seen := map[string]bool{"": true}
	for name := range t.Files {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			seen[d] = true
		}
	}
	seen[EmptyDir] = true
	for d := range seen {
		t.Dirs = append(t.Dirs, d)
	}
	sort.Strings(t.Dirs)
}

// Content is the n bytes of the file name: ipfstest's stream, seeded by
// the seed and the name, so files never share a chunk.
func Content(name string, seed uint64, n int64) io.Reader {
	h := fnv.New64a()
	h.Write([]byte(name))
	return ipfstest.Reader(seed^h.Sum64(), n)
}

// Copy makes dst a copy of the tree as a default pack sees it: hidden
// entries left out, and the unreadable file too unless withUnreadable
// (for a reader that can read it). Files are hard links, so a copy of a
// large tree costs no bytes.
func (t *Tree) Copy(dst string, withUnreadable bool) error {
	return filepath.WalkDir(t.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(t.Dir, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if rel != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case filepath.ToSlash(rel) == t.Unreadable && !withUnreadable:
			return nil
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, out)
		default:
			return os.Link(p, out)
		}
	})
}
