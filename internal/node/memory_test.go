package node

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// TestMemoryIsReturnedOnceAfterABurst: a burst of inputs followed by
// stillness makes the node return memory once, and once more after the
// input log's duplicate window; stillness alone, or a trickle below the
// burst size, does not.
func TestMemoryIsReturnedOnceAfterABurst(t *testing.T) {
	idle, after := releaseIdle, releaseAfter
	t.Cleanup(func() { releaseIdle, releaseAfter = idle, after }) // after the node stops
	releaseIdle, releaseAfter = 300*time.Millisecond, 40
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.Duplicates = 1500 * time.Millisecond
	n := startNode(t, cfg)
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	ctx := context.Background()
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := pub.Publish(ctx, testutil.Replicated(i, 5000, true)); err != nil {
				t.Fatal(err)
			}
		}
		waitIdle(t, n, nt.JS)
	}
	publish(0, 10) // a trickle: below releaseAfter
	time.Sleep(3 * releaseIdle)
	if got := n.releases.Load(); got != 0 {
		t.Fatalf("%d releases after a trickle", got)
	}
	publish(10, 60) // a burst
	start := time.Now()
	testutil.Eventually(t, 10*time.Second, "memory returned after the burst", func() bool { return n.releases.Load() == 1 })
	testutil.Eventually(t, 10*time.Second, "memory returned after the duplicate window", func() bool { return n.releases.Load() == 2 })
	if still := time.Since(start); still < cfg.Duplicates {
		t.Fatalf("second release %s after the burst, before the %s duplicate window passed", still, cfg.Duplicates)
	}
	time.Sleep(3 * releaseIdle)
	if got := n.releases.Load(); got != 2 {
		t.Fatalf("%d releases for one burst, want 2", got)
	}
}
