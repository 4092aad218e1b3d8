//go:build linux

package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
)

// smallDisk mounts a tmpfs of size (as mount's size= option takes it) and
// unmounts it when the test ends. Mounting needs root (CI runs as root):
// the test is skipped, saying so, only for a user who is not; a root user
// whose mount fails fails the test.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as a disk to fill; run as root: go test -run TestAFullDisk ./internal/node/")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a %s tmpfs on %s (root, yet the mount failed): %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes path until the disk has no space left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// postCar posts one event and returns the answer's status and result.
func postCar(t *testing.T, base string, ev *events.CarReplicated) (int, wire.CarResult) {
	t.Helper()
	resp, err := http.Post(base+"/v1/cars", "application/json", bytes.NewReader(testutil.MustEncode(ev)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res wire.CarResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	return resp.StatusCode, res
}

// healthz returns /healthz's status and body.
func healthz(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// TestAFullDiskIsAnsweredAtOnceFailsHealthAndRecoversOnceSpaceIsFreed
// fills the disk under an embedded JetStream until a write meets ENOSPC
// (the file store then keeps the error), and requires: a post answered
// 507 "disk full" at once, not after a 5-s timeout; /healthz 503 saying
// why; and, once the space is freed, posts accepted and aggregated again
// with no restart.
func TestAFullDiskIsAnsweredAtOnceFailsHealthAndRecoversOnceSpaceIsFreed(t *testing.T) {
	disk := smallDisk(t, "32m")
	cfg := testConfig(filepath.Join(disk, "data"), "")
	cfg.MinFree = 2 << 20
	n := startNode(t, cfg)
	base := "http://" + n.HTTPAddr()
	api := client.NewHTTP(n.HTTPAddr())
	ctx := context.Background()
	aggregating := func(ev *events.CarReplicated) func() bool {
		return func() bool {
			v, err := api.Car(ctx, ev.Car)
			return err == nil && v.State == aggregator.Aggregating
		}
	}
	first := testutil.Replicated(1, 1000, true)
	if code, res := postCar(t, base, first); code != http.StatusAccepted {
		t.Fatalf("before the disk fills: %d %+v", code, res)
	}
	testutil.Eventually(t, 10*time.Second, "the first CAR to be aggregated", aggregating(first))

	filler := filepath.Join(disk, "filler")
	fillDisk(t, filler)
	// A producer on NATS is not behind ferry's gate: its publishes reach
	// the file store until one meets ENOSPC, and the store keeps the error.
	admin, err := n.Creds.Option(natsembed.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	_, js := testutil.Connect(t, n.NATSURL(), admin)
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	for i := 100; natsembed.WriteErr(n.Server) == nil; i++ {
		if i == 1100 {
			t.Fatal("1,000 publishes on a full disk and JetStream kept no write error")
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, _ = pub.Publish(pctx, testutil.Replicated(i, 1000, true))
		cancel()
	}

	testutil.Eventually(t, 5*time.Second, "/healthz to fail on the full disk", func() bool {
		code, body := healthz(t, base)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "disk full")
	})
	second := testutil.Replicated(2, 1000, true)
	start := time.Now()
	code, res := postCar(t, base, second)
	took := time.Since(start)
	if code != http.StatusInsufficientStorage || !strings.HasPrefix(res.Reason, "disk full: the input log cannot be written") {
		t.Fatalf("a post on the full disk: %d %+v, want 507 disk full", code, res)
	}
	// JetStream's silence would be answered after nats.go's 5-s timeout.
	if took > 2*time.Second {
		t.Fatalf("a post on the full disk was answered after %v, not at once", took)
	}
	t.Logf("on the full disk: %d %q in %v", code, res.Reason, took)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	testutil.Eventually(t, 10*time.Second, "/healthz to pass once space is freed", func() bool {
		code, _ := healthz(t, base)
		return code == http.StatusOK
	})
	healthy := time.Since(freed)
	if err := natsembed.WriteErr(n.Server); err != nil {
		t.Fatalf("JetStream still keeps a write error: %v", err)
	}
	for _, ev := range []*events.CarReplicated{second, testutil.Replicated(3, 1000, true)} {
		if code, res := postCar(t, base, ev); code != http.StatusAccepted {
			t.Fatalf("a post once space is freed: %d %+v", code, res)
		}
		// Without restarting its readers the aggregator would wait ~10 s for
		// nats.go to miss the heartbeats of consumers that vanished.
		testutil.Eventually(t, 5*time.Second, "a CAR posted after the disk was freed to be aggregated", aggregating(ev))
	}
	t.Logf("space freed: healthy after %v, posts aggregated after %v", healthy, time.Since(freed))
	if !aggregating(first)() {
		t.Fatal("the CAR aggregated before the disk filled is no longer AGGREGATING")
	}
}
