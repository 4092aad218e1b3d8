package carstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
)

// spoolDir is the subdirectory of a Dir that holds spool files; the
// dot keeps it out of what /cars/ serves.
const spoolDir = ".spool"

// Dir is a Store in a local directory: a CAR is the file <dir>/<cid>.car,
// served by ferry at <public>/<cid>.car.
type Dir struct {
	dir    string
	public string
}

// OpenDir opens (creating) the directory dir as a CAR store whose files are
// served under the URL base public (for example
// "http://127.0.0.1:8080/cars").
func OpenDir(dir, public string) (*Dir, error) {
	if _, err := url.Parse(public); err != nil {
		return nil, fmt.Errorf("carstore: public URL: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, spoolDir), 0o755); err != nil {
		return nil, fmt.Errorf("carstore: %w", err)
	}
	return &Dir{dir: dir, public: strings.TrimSuffix(public, "/")}, nil
}

// Path is the directory the store keeps its CARs in.
func (d *Dir) Path() string { return d.dir }

func (d *Dir) Spool() (*os.File, error) {
	return os.CreateTemp(filepath.Join(d.dir, spoolDir), "car-*.tmp")
}

func (d *Dir) Put(ctx context.Context, car cid.Cid, f *os.File) error {
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		d.Discard(f)
		return fmt.Errorf("carstore: %w", err)
	}
	f.Close()
	dst := filepath.Join(d.dir, Name(car))
	if _, err := os.Stat(dst); err == nil {
		// The same name is the same bytes: keep the first.
		return os.Remove(f.Name())
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("carstore: %w", err)
	}
	return syncDir(d.dir)
}

func (d *Dir) Discard(f *os.File) error { return discard(f) }

// discard closes and removes a spool file; one already gone is no error.
func discard(f *os.File) error {
	f.Close()
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (d *Dir) Stat(ctx context.Context, car cid.Cid) (int64, error) {
	info, err := os.Stat(filepath.Join(d.dir, Name(car)))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return info.Size(), nil
}

func (d *Dir) Open(ctx context.Context, car cid.Cid) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(d.dir, Name(car)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

func (d *Dir) URL(car cid.Cid) string { return d.public + "/" + Name(car) }

// Sweep removes spool files not written to for longer than age: those of
// writers that died. It returns how many it removed.
func (d *Dir) Sweep(age time.Duration) (int, error) {
	return sweep(filepath.Join(d.dir, spoolDir), age)
}

func sweep(dir string, age time.Duration) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || time.Since(info.ModTime()) < age {
			continue
		}
		if os.Remove(filepath.Join(dir, e.Name())) == nil {
			n++
		}
	}
	return n, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
