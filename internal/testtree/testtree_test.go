package testtree

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// digest is every entry of dir (name, kind, size, symlink target, bytes)
// in walk order, hashed; readable files only.
func digest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%q %v %d\n", rel, info.Mode().Type(), info.Size())
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "→ %q\n", target)
		case d.Type().IsRegular() && info.Mode().Perm() != 0:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestTheSameSpecWritesTheSameTree(t *testing.T) {
	spec := Spec{Seed: 7, Big: 3*MiB + 5, Split: 2 * MiB, HAMT: 20, Bulk: 2, BulkSize: 1000, Skipped: true}
	a, err := Write(filepath.Join(t.TempDir(), "a"), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Write(filepath.Join(t.TempDir(), "b"), spec)
	if err != nil {
		t.Fatal(err)
	}
	if da, db := digest(t, a.Dir), digest(t, b.Dir); da != db {
		t.Fatal("one spec wrote two different trees")
	}
	spec.Seed++
	c, err := Write(filepath.Join(t.TempDir(), "c"), spec)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, a.Dir) == digest(t, c.Dir) {
		t.Fatal("another seed wrote the same tree")
	}
	if got, want := len(a.Files), 10+2+20+2; got != want {
		t.Fatalf("%d files, want %d", got, want)
	}
	if st, err := os.Stat(filepath.Join(a.Dir, a.Unreadable)); err != nil || st.Mode().Perm() != 0 {
		t.Fatalf("the unreadable file: %v, %v", st, err)
	}
}

func TestNoTwoFilesShareAChunk(t *testing.T) {
	a := make([]byte, MiB)
	b := make([]byte, MiB)
	io.ReadFull(Content("x", 1, MiB), a)
	io.ReadFull(Content("y", 1, MiB), b)
	if string(a[:32]) == string(b[:32]) {
		t.Fatal("two names start with the same bytes")
	}
}

func TestACopyHoldsWhatADefaultPackSees(t *testing.T) {
	tree, err := Write(filepath.Join(t.TempDir(), "t"), Spec{Seed: 1, HAMT: 3, Skipped: true})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := tree.Copy(dst, false); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dst, p)
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") && rel != "." {
			t.Errorf("the copy holds the hidden %s", rel)
		}
		if rel == tree.Unreadable {
			t.Errorf("the copy holds the unreadable %s", rel)
		}
		if d.Type().IsRegular() {
			if _, ok := tree.Files[rel]; !ok {
				t.Errorf("the copy holds %s, not one of the tree's files", rel)
			}
			got = append(got, rel)
		}
		return err
	})
	if len(got) != len(tree.Files) {
		t.Fatalf("the copy holds %d files, the tree %d", len(got), len(tree.Files))
	}
	if target, err := os.Readlink(filepath.Join(dst, filepath.FromSlash(Link))); err != nil || target != LinkTarget {
		t.Fatalf("the copy's symlink: %q, %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(dst, EmptyDir)); err != nil || !st.IsDir() {
		t.Fatalf("the copy's empty directory: %v", err)
	}
}
