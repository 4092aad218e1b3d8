package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// TestPinAndPinsCommands: ferry pin asks a ferry serve to pin a DAG
// boxo's gateway serves; ferry pins lists it, pinned with its CAR, and
// ferry status answers that CAR; a wrong token is refused with the
// service's reason.
func TestPinAndPinsCommands(t *testing.T) {
	store := ipfstest.NewStore()
	dag := store.File(t, ipfstest.Bytes(5, 90<<10), ipfstest.FileOptions{ChunkSize: 16 << 10})
	gw := ipfstest.NewGateway(t, store)
	const token = "cli-pin-token"
	data := t.TempDir()
	s := serve(t, data, "--write-token", token, "--fetch-gateways", gw.URL, "--fetch-allow-private")
	root := dag.Root.String()

	if _, _, err := run(t, "pin", "--server", s.http, "--write-token", "wrong", root); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("ferry pin with a wrong token: %v, want UNAUTHORIZED", err)
	}
	var st struct {
		RequestID string `json:"requestid"`
		Pin       struct {
			CID  string `json:"cid"`
			Name string `json:"name"`
		} `json:"pin"`
	}
	out := mustRun(t, "pin", "--server", s.http, "--write-token", token, "--name", "from the CLI", root)
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.RequestID == "" || st.Pin.CID != root || st.Pin.Name != "from the CLI" {
		t.Fatalf("ferry pin printed %q (%v)", out, err)
	}
	var pinned struct {
		RequestID string            `json:"requestid"`
		Status    string            `json:"status"`
		Info      map[string]string `json:"info"`
	}
	testutil.Eventually(t, 30*time.Second, "ferry pins --status pinned to list the pin", func() bool {
		out := mustRun(t, "pins", "--server", s.http, "--write-token", token, "--status", "pinned")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return len(lines) == 1 && json.Unmarshal([]byte(lines[0]), &pinned) == nil && pinned.RequestID == st.RequestID
	})
	if pinned.Status != "pinned" || pinned.Info["car"] == "" {
		t.Fatalf("ferry pins: %+v", pinned)
	}
	// The pin is pinned once the input log has its car.replicated; the
	// CAR's status is the aggregate log's, which follows a moment later.
	testutil.Eventually(t, 30*time.Second, "ferry status to know the pinned CAR", func() bool {
		_, _, err := run(t, "status", "--server", s.http, pinned.Info["car"])
		return err == nil
	})
	v, _ := status(t, s.http, pinned.Info["car"])
	if v.Car != pinned.Info["car"] || v.Piece != pinned.Info["piece"] {
		t.Fatalf("ferry status %s: %+v, the pin says piece %s", pinned.Info["car"], v, pinned.Info["piece"])
	}
	if out := mustRun(t, "pins", "--server", s.http, "--write-token", token, "--status", "failed"); strings.TrimSpace(out) != "" {
		t.Fatalf("ferry pins --status failed: %q, want none", out)
	}

	// The pins read model is disposable: deleted and replayed, it answers
	// the same.
	before := mustRun(t, "pins", "--server", s.http, "--write-token", token)
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}
	if err := os.Remove(filepath.Join(data, "pins.db")); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, "replay", "--data", data); !strings.Contains(out, "replayed the pins") {
		t.Fatalf("ferry replay printed %q", out)
	}
	s2 := serve(t, data, "--write-token", token, "--fetch-gateways", gw.URL, "--fetch-allow-private")
	if after := mustRun(t, "pins", "--server", s2.http, "--write-token", token); after != before {
		t.Fatalf("ferry pins after replay:\n%s\nbefore:\n%s", after, before)
	}
}
