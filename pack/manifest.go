package pack

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SpecURL names the manifest's format (docs/packing.md).
const SpecURL = "https://github.com/ferry-dev/ferry/blob/main/docs/packing.md#the-manifest"

// ManifestPiece is one CAR in the manifest.
type ManifestPiece struct {
	Car       string `json:"car"`
	Index     int    `json:"index"`
	Kind      string `json:"kind"`
	Root      string `json:"root"`
	Size      uint64 `json:"size"`
	MD5       string `json:"md5"`
	PieceCID  string `json:"piece_cid"`
	PieceSize uint64 `json:"piece_size"`
	URL       string `json:"url,omitempty"`
}

// ManifestEntry is one path of the tree in the manifest.
type ManifestEntry struct {
	Type       string         `json:"type"`
	Path       string         `json:"path"`
	ByteLength *uint64        `json:"byte_length,omitempty"`
	CID        string         `json:"cid"`
	SHA256     string         `json:"sha256,omitempty"`
	Target     string         `json:"target,omitempty"`
	Parts      []ManifestPart `json:"parts,omitempty"`
}

// ManifestPart is where a range of a file is: its CAR, the CAR's piece,
// and the CAR's bytes that hold the range's blocks.
type ManifestPart struct {
	Car       string `json:"car"`
	PieceCID  string `json:"piece_cid"`
	Offset    uint64 `json:"offset"`
	Length    uint64 `json:"length"`
	CarOffset uint64 `json:"car_offset"`
	CarLength uint64 `json:"car_length"`
	SHA256    string `json:"sha256,omitempty"`
}

// writeManifest writes <out>/manifest.json from the records, streaming
// the contents in walk order.
func writeManifest(st *state, plan *Plan, results []*Result, tree *Result, url func(string) string) error {
	dirs, links, split := map[string]string{}, map[string]string{}, map[string]Named{}
	for _, d := range tree.Tree.Dirs {
		dirs[d.Path] = d.CID
	}
	for _, s := range tree.Tree.Symlinks {
		links[s.Path] = s.CID
	}
	for _, s := range tree.Tree.Split {
		split[s.Path] = s
	}
	skipped := map[string]bool{}
	for _, s := range tree.Tree.Skipped {
		skipped[s.Path] = true
	}
	byIndex := map[int]*Result{}
	pieces := make([]ManifestPiece, 0, len(results)+1)
	for _, r := range append(results, tree) {
		byIndex[r.Index] = r
		p := ManifestPiece{Car: r.Car, Index: r.Index, Kind: r.Kind, Root: r.Root, Size: r.Size, MD5: r.MD5, PieceCID: r.Piece, PieceSize: r.PieceSize}
		if url != nil {
			p.URL = url(r.Car)
		}
		pieces = append(pieces, p)
	}

	name := filepath.Join(st.out, "manifest.json")
	tmp := name + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<16)
	head := func(k string, v any, last bool) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprintf(bw, "  %q: %s", k, b)
		if !last {
			bw.WriteString(",\n")
		}
		return nil
	}
	bw.WriteString("{\n")
	for _, kv := range []struct {
		k string
		v any
	}{
		{"@spec", SpecURL}, {"@spec_version", "1.0.0"}, {"name", filepath.Base(plan.Source)},
		{"root", tree.Root}, {"settings", plan.Settings}, {"n_pieces", len(pieces)},
	} {
		if err := head(kv.k, kv.v, false); err != nil {
			return err
		}
	}
	bw.WriteString("  \"pieces\": [")
	for i, p := range pieces {
		if err := item(bw, i, p); err != nil {
			return err
		}
	}
	bw.WriteString("\n  ],\n  \"contents\": [")
	w, err := st.openWalk()
	if err != nil {
		return err
	}
	defer w.Close()
	for i := 0; ; {
		e, parts, err := w.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		m := ManifestEntry{Type: e.Type, Path: e.Path}
		switch e.Type {
		case TypeDirectory:
			m.CID = dirs[e.Path]
		case TypeSymlink:
			m.CID, m.Target = links[e.Path], e.Target
		case TypeFile:
			if skipped[e.Path] {
				continue
			}
			size := e.Size
			m.ByteLength = &size
			for _, p := range parts {
				r := byIndex[jobOf(e, p, parts)]
				m.Parts = append(m.Parts, ManifestPart{Car: r.Car, PieceCID: r.Piece, Offset: p.Offset, Length: p.Length, CarOffset: p.CarOffset, CarLength: p.CarLength, SHA256: p.SHA256})
			}
			if len(parts) == 1 && parts[0].CID != "" {
				m.CID, m.SHA256 = parts[0].CID, parts[0].SHA256
				m.Parts[0].SHA256 = ""
			} else {
				m.CID, m.SHA256 = split[e.Path].CID, split[e.Path].SHA256
			}
		}
		if m.CID == "" {
			return fmt.Errorf("manifest: %s has no CID in the records", e.Path)
		}
		if err := item(bw, i, m); err != nil {
			return err
		}
		i++
	}
	bw.WriteString("\n  ],\n")
	skips := append(append([]Skip{}, plan.Skipped...), tree.Tree.Skipped...)
	if err := head("skipped", skips, true); err != nil {
		return err
	}
	bw.WriteString("\n}\n")
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(st.out)
}

// jobOf is the job of parts[k] where p is parts[k].
func jobOf(e planEntry, p FileResult, parts []FileResult) int {
	for k := range parts {
		if parts[k].Offset == p.Offset {
			return e.Jobs[k]
		}
	}
	return 0
}

func item(w *bufio.Writer, i int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if i > 0 {
		w.WriteByte(',')
	}
	w.WriteString("\n    ")
	_, err = w.Write(b)
	return err
}
