package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
)

// TestFetchWorkerDeadLettersAnUnavailablePinAndDLQHandlesIt: ferry
// fetch-worker, signed in as ferry from --data, takes a pinned CID whose
// only gateway answers 503; with one attempt the work is dead at once,
// `ferry dlq list --queue fetch` shows it with the reason, replay queues
// it again and purge deletes it.
func TestFetchWorkerDeadLettersAnUnavailablePinAndDLQHandlesIt(t *testing.T) {
	data := t.TempDir()
	s := serve(t, data, "--piece-workers", "0", "--fetch-workers", "0")
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	t.Cleanup(gw.Close)
	startBG(t, regexp.MustCompile(`(?m)^fetch-worker: 1 workers on `), "fetch-worker", "--nats", s.nats, "--data", data,
		"--workers", "1", "--fetch-attempts", "1", "--fetch-gateways", gw.URL, "--fetch-allow-private",
		"--car-store", t.TempDir(), "--public-url", "http://127.0.0.1:1")

	_, js := testutil.Connect(t, s.nats, nkey(t, filepath.Join(data, "nats", "ferry.nk")))
	const root = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	if err := fetchworker.Enqueue(context.Background(), js, jetlog.DefaultSubjects, fetchworker.Item{CID: root, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	dlq := []string{"dlq", "--nats", s.nats, "--data", data, "--queue", "fetch"}
	testutil.Eventually(t, 30*time.Second, "the fetch work dead-lettered", func() bool {
		return strings.Contains(mustRun(t, append(dlq, "list")...), "fetch  ")
	})
	out := mustRun(t, append(dlq, "list")...)
	if !strings.Contains(out, root) || !strings.Contains(out, "503") {
		t.Fatalf("dlq list:\n%s\nwant the CID and its 503", out)
	}
	if out := mustRun(t, append(dlq, "replay")...); !strings.Contains(out, "1 fetch dead letters replayed") {
		t.Fatalf("dlq replay: %q", out)
	}
	testutil.Eventually(t, 30*time.Second, "the replayed work dead again", func() bool {
		return strings.Contains(mustRun(t, append(dlq, "list")...), root)
	})
	if out := mustRun(t, append(dlq, "purge")...); !strings.Contains(out, "1 fetch dead letters purged") {
		t.Fatalf("dlq purge: %q", out)
	}
	if out := mustRun(t, append(dlq, "list")...); strings.Contains(out, root) {
		t.Fatalf("dlq list after purge:\n%s", out)
	}
}

func nkey(t *testing.T, seed string) nats.Option {
	t.Helper()
	o, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
