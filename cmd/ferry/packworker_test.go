package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// TestPackThroughPackWorkers: `ferry pack --nats --publish` against ferry
// serve, signed in as ferry from --data, with a `ferry pack-worker`
// building its CARs, gives the manifest and CARs `ferry pack` gives
// alone, and ferry knows every CAR it published.
func TestPackThroughPackWorkers(t *testing.T) {
	data := t.TempDir()
	s := serve(t, data, "--piece-workers", "0", "--fetch-workers", "0")
	src := t.TempDir()
	for i, n := range []int{10, 600_000, 3<<20 + 5, 0, 1 << 20, 250_000, 800_000} {
		p := filepath.Join(src, "d"+string(rune('a'+i%3)), "f"+string(rune('a'+i)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, ipfstest.Bytes(uint64(i+1), n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flags := []string{"--car-size", "2MiB", "--shard-size", "1MiB", "--progress", "never", "--url-base", "http://127.0.0.1:1/cars"}
	local, remote := t.TempDir(), t.TempDir()
	mustRun(t, append(append([]string{"pack", "--out", local}, flags...), src)...)

	if _, _, err := run(t, "pack-worker", "--nats", s.nats, "--source-map", "relative=/x"); !errors.Is(err, errUsage) {
		t.Errorf("pack-worker with a relative --source-map: %v, want a usage error", err)
	}
	startBG(t, regexp.MustCompile(`(?m)^pack-worker: 2 jobs at once on `), "pack-worker", "--nats", s.nats, "--data", data, "--jobs", "2")
	start := time.Now()
	out := mustRun(t, append(append([]string{"pack", "--out", remote, "--nats", s.nats, "--data", data, "--publish"}, flags...), src)...)
	t.Logf("pack through the worker: %v\n%s", time.Since(start).Round(time.Millisecond), out)

	want, got := testutil.PackOutput(t, local), testutil.PackOutput(t, remote)
	if len(want) < 4 || len(got) != len(want) {
		t.Fatalf("%d files out of the workers' pack, %d of the local one: want several CARs and the manifest", len(got), len(want))
	}
	for name, b := range want {
		if !bytes.Equal(got[name], b) {
			t.Errorf("%s differs from the local pack's", name)
		}
	}
	var m struct {
		Pieces []struct{ Car, URL string } `json:"pieces"`
	}
	if err := json.Unmarshal(want["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Pieces {
		testutil.Eventually(t, 30*time.Second, "ferry knows CAR "+p.Car, func() bool {
			_, _, err := run(t, "status", "--server", "http://"+s.http, p.Car)
			return err == nil
		})
	}
	if out := mustRun(t, "dlq", "--queue", "pack", "--nats", s.nats, "--data", data, "list"); strings.Count(out, "\n") != 1 {
		t.Errorf("dlq list --queue pack:\n%s\nwant no dead letters", out)
	}
}
