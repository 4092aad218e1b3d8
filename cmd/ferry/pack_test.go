package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/piece"
)

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type packManifest struct {
	Root   string `json:"root"`
	Pieces []struct {
		Car       string `json:"car"`
		Kind      string `json:"kind"`
		PieceCID  string `json:"piece_cid"`
		PieceSize uint64 `json:"piece_size"`
		URL       string `json:"url"`
	} `json:"pieces"`
}

func TestPackPublishesEveryCARIntoAggregates(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	writeFiles(t, src, map[string][]byte{
		"a/one.bin":  ipfstest.Bytes(1, 1500<<10),
		"a/two.bin":  ipfstest.Bytes(2, 900<<10),
		"big.bin":    ipfstest.Bytes(3, 3<<20+17),
		"notes.txt":  []byte("notes\n"),
		"z/last.bin": ipfstest.Bytes(4, 2<<20),
	})
	s := serve(t, t.TempDir(), "--car-store", out, "--max-wait", "1h")
	base := "http://" + s.http
	stdout := mustRun(t, "pack", src, "--out", out, "--car-size", "3MiB", "--shard-size", "1MiB",
		"--publish", "--server", base, "--url-base", base+"/cars")
	for _, want := range []string{"packed 5 files", "tree root bafy", "manifest " + filepath.Join(out, "manifest.json")} {
		if !strings.Contains(stdout, want) {
			t.Errorf("ferry pack printed %q, want %q in it", stdout, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m packManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Pieces) < 4 {
		t.Fatalf("%d CARs: want several data CARs and the tree CAR", len(m.Pieces))
	}
	for _, p := range m.Pieces {
		v, _ := status(t, s.http, p.Car)
		held, err1 := piece.Parse(v.Piece, v.PieceSize)
		packed, err2 := piece.Parse(p.PieceCID, p.PieceSize)
		if err1 != nil || err2 != nil || held.Root != packed.Root || held.Padded != packed.Padded {
			t.Errorf("%s: ferry holds piece %q/%d, the manifest %q/%d (%v, %v)", p.Car, v.Piece, v.PieceSize, p.PieceCID, p.PieceSize, err1, err2)
		}
		if p.URL != base+"/cars/"+p.Car+".car" {
			t.Errorf("%s: url %q", p.Car, p.URL)
		}
	}
	rows := closeAll(t, s.http, len(m.Pieces))
	for _, r := range rows {
		verifyAggregate(t, aggregateOf(t, s.http, r.id))
	}

	// Run again: nothing is built or published twice.
	again := mustRun(t, "pack", src, "--out", out, "--car-size", "3MiB", "--shard-size", "1MiB",
		"--publish", "--server", base, "--url-base", base+"/cars")
	if !strings.Contains(again, "0 built now") {
		t.Errorf("a second pack printed %q, want nothing built", again)
	}
}

func TestPackDrawsItsProgress(t *testing.T) {
	src := t.TempDir()
	files := map[string][]byte{}
	for i := range 40 {
		files[fmt.Sprintf("f%02d.bin", i)] = ipfstest.Bytes(uint64(i), 1<<20)
	}
	writeFiles(t, src, files)
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = time.Millisecond
	_, stderr, err := run(t, "pack", src, "--out", t.TempDir(), "--car-size", "4MiB", "--shard-size", "1MiB", "--jobs", "1", "--progress", "always")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`pack: \d+/40 files, \d+ MiB of 40 MiB, \d+/\d+ CARs, \d+ MiB/s`)
	if !line.MatchString(stderr) {
		t.Errorf("stderr %q has no progress line", stderr)
	}
}

func TestPackRefusesBadFlags(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string][]byte{"a": []byte("a")})
	out := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pack", src}, "give one DIR and --out"},
		{[]string{"pack", src, "--out", out, "--publish", "--server", "127.0.0.1:1"}, "--publish needs --url-base or --url-template"},
		{[]string{"pack", src, "--out", out, "--url-base", "http://x", "--url-template", "http://x/{car}"}, "not both"},
		{[]string{"pack", src, "--out", out, "--url-template", "http://x/car"}, "has no {car}"},
		{[]string{"pack", src, "--out", out, "--server", "127.0.0.1:1"}, "add --publish"},
		{[]string{"pack", src, "--out", out, "--car-size", "40GiB"}, "fit a 32 GiB piece"},
		{[]string{"pack", src, "--out", out, "--car-size", "8MiB", "--shard-size", "8MiB"}, "below the car size"},
		{[]string{"pack", src, "--out", out, "--exclude", "[", "--car-size", "8MiB", "--shard-size", "1MiB"}, "exclude"},
		{[]string{"pack", src, "--out", out, "--jobs", "0"}, "--jobs 0"},
	} {
		_, stderr, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error()+stderr, c.want) {
			t.Errorf("ferry %s: %v, want an error with %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
