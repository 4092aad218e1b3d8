package pack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// StateDir is the pack's own directory inside the output directory.
const StateDir = ".ferry-pack"

// state is a pack's records under <out>/.ferry-pack: plan.json,
// entries.jsonl, jobs/, done/ (each finished CAR's Result, the tree CAR
// as 0), published/ (a mark per published CAR) and tmp/ (CARs being
// built).
type state struct {
	out string
	dir string
}

func openState(out string) (*state, error) {
	st := &state{out: out, dir: filepath.Join(out, StateDir)}
	for _, d := range []string{"jobs", "done", "published", "tmp"} {
		if err := os.MkdirAll(filepath.Join(st.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (st *state) path(name string) string { return filepath.Join(st.dir, filepath.FromSlash(name)) }

// writeJSON replaces name with v, whole or not at all: a temp file, synced,
// renamed, the directory synced.
func (st *state) writeJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(st.path(name), append(b, '\n'))
}

func writeFileAtomic(name string, b []byte) error {
	tmp := name + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(name))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readJSON reads name into v; a missing file is (false, nil).
func (st *state) readJSON(name string, v any) (bool, error) {
	b, err := os.ReadFile(st.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", st.path(name), err)
	}
	return true, nil
}

func (st *state) exists(name string) bool {
	_, err := os.Stat(st.path(name))
	return err == nil
}
