package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// storedCars counts the car.replicated messages of the input log.
func storedCars(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, jetlog.StreamIn)
	if err != nil {
		t.Fatal(err)
	}
	subject := jetlog.DefaultSubjects.Input(events.TypeCarReplicated)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// eventLines writes the events of seeds from…from+n-1 as JSON lines.
func eventLines(t *testing.T, from, n int) string {
	t.Helper()
	var buf bytes.Buffer
	for i := from; i < from+n; i++ {
		buf.Write(testutil.MustEncode(testutil.Replicated(i, carSize(i), true)))
		buf.WriteByte('\n')
	}
	f := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPublishCountsFerrysAnswers(t *testing.T) {
	s := serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1", "--dedup-window", "1s")
	js := s.admin(t)

	t.Run("an event too big for the server's 8MiB deal is rejected with ferry's reason, exit 3", func(t *testing.T) {
		// 9MiB is a fine CAR for the 32GiB default: only the server's
		// settings make it too big.
		ev := testutil.Replicated(500, 9<<20, false)
		got, errOut := publishRejecting(t, "--server", s.http, "--car", ev.Car, "--size", fmt.Sprint(ev.Size),
			"--md5", ev.MD5, "--url", ev.URLs[0])
		if got != (answers{total: 1, rejected: 1}) || !strings.Contains(errOut, ev.Car+": rejected: size:") {
			t.Fatalf("publish of a 9MiB CAR to an 8MiB ferry: %+v\n%s", got, errOut)
		}
	})

	t.Run("re-published CARs are counted duplicate after the duplicate window too", func(t *testing.T) {
		file := eventLines(t, 600, 20)
		out := mustRun(t, "publish", "--server", s.http, "--file", file)
		if got := publishSummary(t, out); got != (answers{total: 20, accepted: 20}) {
			t.Fatalf("first publish: %q", out)
		}
		for i := 600; i < 620; i++ {
			car := testutil.CarCID(i).String()
			testutil.Eventually(t, 30*time.Second, "CAR "+car+" aggregating", func() bool {
				out, _, err := run(t, "status", "--server", s.http, car)
				return err == nil && strings.Contains(out, `"state": "AGGREGATING"`)
			})
		}
		time.Sleep(1500 * time.Millisecond) // past --dedup-window: JetStream would store them again
		out = mustRun(t, "publish", "--server", s.http, "--file", file)
		if got := publishSummary(t, out); got != (answers{total: 20, duplicate: 20}) {
			t.Fatalf("re-publish: %q", out)
		}
	})

	t.Run("an event without car is rejected here and nothing is stored", func(t *testing.T) {
		noCar := testutil.Replicated(700, 1000, true)
		noCar.Car = ""
		f := filepath.Join(t.TempDir(), "nocar.jsonl")
		os.WriteFile(f, append(testutil.MustEncode(noCar), '\n'), 0o644)
		before := storedCars(t, js)
		got, errOut := publishRejecting(t, "--server", s.http, "--file", f)
		if got != (answers{total: 1, rejected: 1}) || !strings.Contains(errOut, "line 1: rejected here, not sent: car: missing") {
			t.Fatalf("over HTTP: %+v %q", got, errOut)
		}
		out, errOut, err := run(t, "publish", "--nats", s.nats, "--data", s.data, "--file", f)
		if !errors.Is(err, errRejected) || !strings.Contains(out, "rejected here 1") || !strings.Contains(errOut, "car: missing") {
			t.Fatalf("over NATS: %v %q %q", err, out, errOut)
		}
		if after := storedCars(t, js); after != before {
			t.Fatalf("the input log went from %d to %d car.replicated events", before, after)
		}
	})
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}
}

// endless writes car.replicated lines from seed on to w until a write
// fails.
func endless(w *io.PipeWriter, seed int) {
	for i := seed; ; i++ {
		if _, err := w.Write(append(testutil.MustEncode(testutil.Replicated(i, carSize(i), true)), '\n')); err != nil {
			return
		}
	}
}

// An interrupted publish returns within a second, and what it counts as
// stored is in the log: no guesses either way. Events whose answer was
// on its way are counted not acknowledged, and the log holds at most
// those besides.
func TestPublishStopsWithinASecondOfCtrlCAndCountsOnlyWhatWasAcknowledged(t *testing.T) {
	s := serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1")
	js := s.admin(t)
	for _, tc := range []struct {
		name string
		args []string
		seed int
	}{
		{"over HTTP", []string{"--server", s.http}, 0},
		{"over NATS", []string{"--nats", s.nats, "--data", s.data}, 1_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := storedCars(t, js)
			pr, pw := io.Pipe()
			go endless(pw, tc.seed)
			defer pr.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out, errOut syncBuf
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, append(append([]string{"publish"}, tc.args...), "-"), pr, &out, &errOut)
			}()
			testutil.Eventually(t, 60*time.Second, "4,000 events stored", func() bool { return storedCars(t, js)-before >= 4000 })
			cancel()
			stopped := time.Now()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("publish still running 30s after the interrupt")
			}
			took := time.Since(stopped)
			if took > time.Second {
				t.Errorf("publish returned %v after the interrupt, want within 1s", took)
			}
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") {
				t.Errorf("interrupted publish returned %v", err)
			}
			pr.Close()

			a := publishSummary(t, out.String())
			// Appends the server had begun may still land: wait until
			// the log stops growing.
			stored := storedCars(t, js) - before
			for {
				time.Sleep(300 * time.Millisecond)
				now := storedCars(t, js) - before
				if now == stored {
					break
				}
				stored = now
			}
			t.Logf("returned %v after the interrupt: %+v; the log holds %d", took, a, stored)
			if a.duplicate != 0 || a.rejected != 0 || a.conflict != 0 {
				t.Fatalf("fresh valid events answered %+v\n%s", a, errOut.String())
			}
			if uint64(a.accepted) > stored || stored > uint64(a.accepted+a.unacked) {
				t.Fatalf("publish counts %d acknowledged and %d unanswered; the log holds %d", a.accepted, a.unacked, stored)
			}
		})
	}
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}
}

func TestPublishCountsAConflictAndExitsThree(t *testing.T) {
	var stderr bytes.Buffer
	tl := &tally{stderr: &stderr, start: time.Now()}
	it := item{at: "line 1", ev: testutil.Replicated(1, 1000, true)}
	tl.answer(it, wire.CarResult{Car: it.ev.Car, Status: wire.Accepted})
	tl.answer(it, wire.CarResult{Car: it.ev.Car, Status: "conflict", Reason: "size, md5 differ from the accepted copy"})
	var out bytes.Buffer
	tl.summary(&out)
	err := tl.verdict(context.Background(), nil, nil)
	if !errors.Is(err, errRejected) || !strings.Contains(out.String(), "accepted 1, duplicate 0, conflict 1, rejected 0") ||
		!strings.Contains(stderr.String(), "line 1: "+it.ev.Car+": conflict: size, md5 differ") {
		t.Fatalf("%v %q %q", err, out.String(), stderr.String())
	}
}
