package pack

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestManifestExampleInDocs packs the tree docs/packing.md describes and
// holds the manifest it shows to what a pack writes. FERRY_UPDATE_DOCS=1
// rewrites the example instead.
func TestManifestExampleInDocs(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "photos")
	writeTree(t, src, tree{
		"a.txt":          "hello\n",
		"2024/beach.jpg": random(2024, 3_000_000),
		"latest":         "->a.txt",
	})
	s, err := NewSettings(2<<20, 1<<20, false, nil, true)
	must(t, err)
	out := filepath.Join(base, "out")
	_, err = Run(context.Background(), Options{Source: src, Out: out, Settings: s, Builder: Local{Jobs: 1},
		URL: func(c string) string { return "https://cars.example.org/" + c + ".car" }})
	must(t, err)
	_, got := readManifest(t, out)

	doc, err := os.ReadFile("../docs/packing.md")
	must(t, err)
	const open = "--url-base https://cars.example.org`:\n\n```json\n"
	i := bytes.Index(doc, []byte(open))
	if i < 0 {
		t.Fatal("docs/packing.md has no manifest example")
	}
	i += len(open)
	j := i + bytes.Index(doc[i:], []byte("```\n"))
	if os.Getenv("FERRY_UPDATE_DOCS") == "1" {
		doc = append(append(append([]byte{}, doc[:i]...), got...), doc[j:]...)
		must(t, os.WriteFile("../docs/packing.md", doc, 0o644))
		return
	}
	if want := doc[i:j]; !bytes.Equal(got, want) {
		t.Errorf("docs/packing.md's manifest example is not what a pack writes; run FERRY_UPDATE_DOCS=1 go test ./pack -run %s\ngot:\n%s", t.Name(), strings.TrimSpace(string(got)))
	}
}
