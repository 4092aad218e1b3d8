package seen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/internal/ctxio"
)

// RunStore holds run files by name (the hex SHA-256 of their bytes); it
// is where a new leader finds the runs a snapshot's manifest names.
type RunStore interface {
	Put(ctx context.Context, name string, r io.Reader) error
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	Has(ctx context.Context, name string) (bool, error)
}

// DirStore is a RunStore on a local directory.
type DirStore string

var _ RunStore = DirStore("")

// Put stores r as name (through a temporary file, so a crash leaves no
// partial run under its name).
func (d DirStore) Put(ctx context.Context, name string, r io.Reader) error {
	if !validName(name) {
		return fmt.Errorf("seen: %q is not a run name", name)
	}
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(string(d), ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, ctxio.Reader(ctx, r)); err != nil {
		tmp.Close()
		return err
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(string(d), name))
}

// Get opens name; a missing run gives an error matching fs.ErrNotExist.
func (d DirStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if !validName(name) {
		return nil, fmt.Errorf("seen: %q is not a run name", name)
	}
	return os.Open(filepath.Join(string(d), name))
}

// Has says whether name is stored.
func (d DirStore) Has(ctx context.Context, name string) (bool, error) {
	_, err := os.Stat(filepath.Join(string(d), name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// putRuns puts into store every run it lacks, from the cache; a nil
// store takes none.
func putRuns(ctx context.Context, store RunStore, runs []*run) error {
	if store == nil {
		return nil
	}
	for _, r := range runs {
		has, err := store.Has(ctx, r.name)
		if err != nil {
			return fmt.Errorf("seen: run store: %w", err)
		}
		if has {
			continue
		}
		if err := store.Put(ctx, r.name, io.NewSectionReader(r.f, 0, 1<<62)); err != nil {
			return fmt.Errorf("seen: put run %s: %w", r.name, err)
		}
	}
	return nil
}

// cached makes sure name is in dir with the bytes its name says,
// fetching it from store when it is missing or not what it should be.
func cached(ctx context.Context, store RunStore, dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	if checked(path) {
		return path, nil
	}
	if err := verifyFile(path, name); err == nil {
		markChecked(path)
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrCorrupt) {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rc, err := store.Get(ctx, name)
	if err != nil {
		return "", fmt.Errorf("seen: get run %s: %w", name, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, ".get-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), ctxio.Reader(ctx, rc))
	if err == nil {
		err = tmp.Sync()
	}
	if err = errors.Join(err, tmp.Close()); err != nil {
		return "", fmt.Errorf("seen: get run %s: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != name {
		return "", fmt.Errorf("%w: the store's run %s has sha256 %s", ErrCorrupt, name, got)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	markChecked(path)
	return path, nil
}

// checkedRuns are the cache files this process wrote or verified, with
// their size and modification time then: a standby's Prefetch hashes a
// run once, and the Open of its takeover does not hash it again. A file
// changed since (another size or time) is verified again.
var checkedRuns sync.Map // path → fileStamp

type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, bool) {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, false
	}
	return fileStamp{info.Size(), info.ModTime()}, true
}

func markChecked(path string) {
	if st, ok := stampOf(path); ok {
		checkedRuns.Store(absPath(path), st)
	}
}

func checked(path string) bool {
	was, ok := checkedRuns.Load(absPath(path))
	now, exists := stampOf(path)
	return ok && exists && was.(fileStamp) == now
}

// removeRun removes a run file from the cache, and from checkedRuns.
func removeRun(path string) {
	os.Remove(path)
	checkedRuns.Delete(absPath(path))
}

// absPath names a file alike however its directory was given.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// verifyFile checks that the file at path hashes to name.
func verifyFile(path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != name {
		return fmt.Errorf("%w: cached run %s", ErrCorrupt, name)
	}
	return nil
}

// Prefetch brings the runs m names into cacheDir (a standby warms its
// cache so that a takeover's Open reads no store).
func Prefetch(ctx context.Context, m Manifest, store RunStore, cacheDir string) error {
	names, _, err := m.parse()
	if err != nil {
		return err
	}
	for _, name := range names {
		if _, err := cached(ctx, store, cacheDir, name); err != nil {
			return err
		}
	}
	return nil
}

// Open returns the index as of m: it fetches the runs missing from
// cacheDir from store (and those whose bytes are not what their name
// says), verifies each against its name and loads their filters and
// fences from their footers. A run the store holds wrong gives ErrCorrupt.
func Open(ctx context.Context, m Manifest, store RunStore, cacheDir string) (*Index, error) {
	names, keys, err := m.parse()
	if err != nil {
		return nil, err
	}
	ix := New(cacheDir)
	ix.n = keys
	for _, name := range names {
		path, err := cached(ctx, store, cacheDir, name)
		if err != nil {
			ix.Close()
			return nil, err
		}
		r, err := openRun(path, name)
		if err != nil {
			ix.Close()
			return nil, err
		}
		ix.runs = append(ix.runs, r)
	}
	return ix, nil
}
