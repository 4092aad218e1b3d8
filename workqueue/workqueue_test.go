package workqueue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// testQueue is a queue of its own, not ferry's piece work: nothing in the
// package may depend on which work it carries.
var testQueue = workqueue.Queue{
	Name: "test work", Stream: "TEST_WORK", Subject: "test.work.", Consumer: "test-workers",
	DeadStream: "TEST_DLQ", DeadSubject: "test.dlq.",
}

// startQueue starts a JetStream server with the queue's streams configured
// as the package doc requires.
func startQueue(t *testing.T) jetstream.JetStream {
	t.Helper()
	nt := testutil.StartNATS(t)
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: testQueue.Stream, Subjects: []string{testQueue.Subject + ">"}, Retention: jetstream.WorkQueuePolicy,
			MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true},
		{Name: testQueue.DeadStream, Subjects: []string{testQueue.DeadSubject + ">"}},
	} {
		if _, err := nt.JS.CreateOrUpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return nt.JS
}

// attempts records each delivery a handler saw, by key.
type attempts struct {
	mu   sync.Mutex
	seen map[string][]attempt
}

type attempt struct {
	n  int
	at time.Time
}

func (a *attempts) add(job workqueue.Job) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[string][]attempt{}
	}
	a.seen[job.Key] = append(a.seen[job.Key], attempt{job.Attempt, time.Now()})
}

func (a *attempts) of(key string) []attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]attempt(nil), a.seen[key]...)
}

func TestAKeyWaitsOnceHoweverOftenItIsEnqueued(t *testing.T) {
	js := startQueue(t)
	for range 3 {
		if err := workqueue.Enqueue(context.Background(), js, testQueue, "a", []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.Msgs(t, js, testQueue.Stream); got != 1 {
		t.Fatalf("%d items waiting, want 1", got)
	}
}

// TestAnItemIsClaimedByOneWorkerAtATime: two sets of workers share the
// queue, and some items take longer than the ack wait; the heartbeat keeps
// each claim, so no item is ever worked on twice at once or finished
// twice.
func TestAnItemIsClaimedByOneWorkerAtATime(t *testing.T) {
	js := startQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const items = 20
	for i := range items {
		if err := workqueue.Enqueue(ctx, js, testQueue, fmt.Sprint(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var busy, done sync.Map
	var overlaps, finished atomic.Int32
	handler := func(ctx context.Context, job workqueue.Job) error {
		n, _ := busy.LoadOrStore(job.Key, new(atomic.Int32))
		if n.(*atomic.Int32).Add(1) > 1 {
			overlaps.Add(1)
		}
		defer n.(*atomic.Int32).Add(-1)
		if job.Key == "0" || job.Key == "1" {
			time.Sleep(1500 * time.Millisecond) // past the ack wait
		}
		if _, again := done.LoadOrStore(job.Key, true); again {
			overlaps.Add(1)
		}
		finished.Add(1)
		return nil
	}
	var wg sync.WaitGroup
	for range 2 {
		w := workqueue.New(js, testQueue, workqueue.Config{Workers: 2, AckWait: time.Second}, handler)
		wg.Go(func() { w.Run(ctx) })
	}
	testutil.Eventually(t, 30*time.Second, "every item done", func() bool { return finished.Load() == items })
	// Long enough for a lost claim to be delivered again.
	time.Sleep(1500 * time.Millisecond)
	cancel()
	wg.Wait()
	if got := overlaps.Load(); got != 0 {
		t.Fatalf("%d items worked on twice", got)
	}
	if got := finished.Load(); got != items {
		t.Fatalf("%d items finished, want %d", got, items)
	}
	if got := testutil.Msgs(t, js, testQueue.Stream); got != 0 {
		t.Fatalf("%d items left on the queue", got)
	}
}

func TestADeadWorkersItemGoesToAnotherAfterTheAckWait(t *testing.T) {
	js := startQueue(t)
	if err := workqueue.Enqueue(context.Background(), js, testQueue, "k", []byte("body")); err != nil {
		t.Fatal(err)
	}
	cfg := workqueue.Config{AckWait: time.Second}
	started := make(chan struct{})
	first, kill := context.WithCancel(context.Background())
	done := make(chan struct{})
	w1 := workqueue.New(js, testQueue, cfg, func(ctx context.Context, job workqueue.Job) error {
		close(started)
		<-ctx.Done() // dies mid-item
		return ctx.Err()
	})
	go func() { w1.Run(first); close(done) }()
	<-started
	kill()
	<-done
	killed := time.Now()
	var got attempts
	second, stop := context.WithCancel(context.Background())
	defer stop()
	w2 := workqueue.New(js, testQueue, cfg, func(ctx context.Context, job workqueue.Job) error {
		if string(job.Data) != "body" {
			t.Errorf("data %q", job.Data)
		}
		got.add(job)
		return nil
	})
	go w2.Run(second)
	testutil.Eventually(t, 20*time.Second, "the second worker to get the item", func() bool { return len(got.of("k")) > 0 })
	a := got.of("k")
	if len(a) != 1 || a[0].n != 2 {
		t.Fatalf("second worker's deliveries %+v, want one, the item's second", a)
	}
	if waited := a[0].at.Sub(killed); waited < 500*time.Millisecond {
		t.Fatalf("redelivered %v after the first worker died, before its claim could expire", waited)
	}
}

// TestFailuresRetryByAttemptThenDeadLetterAndReplay follows one item
// through every attempt: each retry waits its attempt's backoff, the last
// failure stores a dead letter (with Config.Reason's words) and runs
// Config.Dead once, nothing is tried after it, and a replayed letter is
// worked on again from its first attempt.
func TestFailuresRetryByAttemptThenDeadLetterAndReplay(t *testing.T) {
	js := startQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := workqueue.Enqueue(ctx, js, testQueue, "k", []byte("body")); err != nil {
		t.Fatal(err)
	}
	if err := workqueue.Enqueue(ctx, js, testQueue, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	backoff := []time.Duration{300 * time.Millisecond, 900 * time.Millisecond}
	var got attempts
	var fail atomic.Bool
	fail.Store(true)
	var deads sync.Map
	cfg := workqueue.Config{
		MaxDeliver: 3, Backoff: backoff,
		Reason: func(err error) string { return "said: " + err.Error() },
		Dead: func(_ context.Context, job workqueue.Job, reason string) error {
			if _, again := deads.LoadOrStore(job.Key, reason); again {
				t.Errorf("Dead ran twice for %s", job.Key)
			}
			return nil
		},
	}
	w := workqueue.New(js, testQueue, cfg, func(ctx context.Context, job workqueue.Job) error {
		got.add(job)
		if job.Key == "other" || !fail.Load() {
			return nil
		}
		return fmt.Errorf("attempt %d failed", job.Attempt)
	})
	go w.Run(ctx)
	testutil.Eventually(t, 20*time.Second, "a dead letter", func() bool {
		_, ok := deads.Load("k")
		return ok
	})
	a := got.of("k")
	if len(a) != 3 {
		t.Fatalf("%d attempts, want 3", len(a))
	}
	for i, at := range a {
		if at.n != i+1 {
			t.Fatalf("attempt %d numbered %d", i+1, at.n)
		}
		if i > 0 {
			if wait, least := at.at.Sub(a[i-1].at), backoff[i-1]; wait < least {
				t.Fatalf("attempt %d came %v after the one before, before its backoff %v", i+1, wait, least)
			}
		}
	}
	if reason, _ := deads.Load("k"); reason != "said: attempt 3 failed" {
		t.Fatalf("Dead got reason %q", reason)
	}
	letters, err := workqueue.DeadLetters(ctx, js, testQueue, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 {
		t.Fatalf("dead letters %+v, want one", letters)
	}
	l := letters[0]
	if l.Key != "k" || string(l.Data) != "body" || l.Reason != "said: attempt 3 failed" || l.Deliveries != "3" || l.FailedAt == "" {
		t.Fatalf("dead letter %+v", l)
	}
	if only, err := workqueue.DeadLetters(ctx, js, testQueue, "other"); err != nil || len(only) != 0 {
		t.Fatalf("dead letters of a key that succeeded: %+v %v", only, err)
	}
	// Nothing is tried after the last attempt.
	time.Sleep(2 * backoff[1])
	if n := len(got.of("k")); n != 3 || testutil.Msgs(t, js, testQueue.Stream) != 0 {
		t.Fatalf("%d attempts, %d items waiting after the dead letter", n, testutil.Msgs(t, js, testQueue.Stream))
	}

	fail.Store(false)
	err = workqueue.Replay(ctx, js, testQueue, letters, func(ctx context.Context, l workqueue.DeadLetter) error {
		return workqueue.Enqueue(ctx, js, testQueue, l.Key, l.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the replayed item to be worked on", func() bool { return len(got.of("k")) == 4 })
	if a := got.of("k"); a[3].n != 1 {
		t.Fatalf("the replayed item came as attempt %d, want 1", a[3].n)
	}
	if left, err := workqueue.DeadLetters(ctx, js, testQueue, ""); err != nil || len(left) != 0 {
		t.Fatalf("dead letters after replay: %+v %v", left, err)
	}
}

// TestHandlerOutcomes: Drop removes an unreadable item without a dead
// letter; RetrySoon retries even past the last attempt, since the failure
// says nothing about the item; RetryAfter too, after the handler's wait;
// a letter purged is gone without its work.
func TestHandlerOutcomes(t *testing.T) {
	js := startQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, k := range []string{"drop", "soon", "wait", "dead"} {
		if err := workqueue.Enqueue(ctx, js, testQueue, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	var got attempts
	cfg := workqueue.Config{MaxDeliver: 1, Backoff: []time.Duration{100 * time.Millisecond}}
	w := workqueue.New(js, testQueue, cfg, func(ctx context.Context, job workqueue.Job) error {
		got.add(job)
		switch {
		case job.Key == "drop":
			return workqueue.Drop("unreadable", errors.New("not JSON"))
		case job.Key == "soon" && job.Attempt < 3:
			return workqueue.RetrySoon(errors.New("outcome not stored"))
		case job.Key == "soon":
			return nil
		case job.Key == "wait" && job.Attempt < 3:
			return workqueue.RetryAfter(300*time.Millisecond, errors.New("not there yet"))
		case job.Key == "wait":
			return nil
		}
		return errors.New("no")
	})
	go w.Run(ctx)
	testutil.Eventually(t, 20*time.Second, "the retried item done and the failed one dead", func() bool {
		letters, _ := workqueue.DeadLetters(ctx, js, testQueue, "")
		return len(got.of("soon")) == 3 && len(got.of("wait")) == 3 && len(letters) == 1
	})
	if w := got.of("wait"); w[2].at.Sub(w[1].at) < 300*time.Millisecond {
		t.Fatalf("RetryAfter's item came again after %v, want the handler's 300ms", w[2].at.Sub(w[1].at))
	}
	if n := len(got.of("drop")); n != 1 {
		t.Fatalf("dropped item tried %d times", n)
	}
	letters, err := workqueue.DeadLetters(ctx, js, testQueue, "")
	if err != nil || len(letters) != 1 || letters[0].Key != "dead" || letters[0].Reason != "no" {
		t.Fatalf("dead letters %+v %v, want only the failed item's", letters, err)
	}
	if err := workqueue.Purge(ctx, js, testQueue, letters); err != nil {
		t.Fatal(err)
	}
	if left, err := workqueue.DeadLetters(ctx, js, testQueue, ""); err != nil || len(left) != 0 {
		t.Fatalf("dead letters after purge: %+v %v", left, err)
	}
	if n := testutil.Msgs(t, js, testQueue.Stream); n != 0 {
		t.Fatalf("%d items waiting after purge", n)
	}
}

// TestFailedAttemptsAreRecordedUntilTheItemIsDone follows the attempt
// records of two items: one that fails once and then succeeds (its record
// says the first failure, then is removed), one that runs out of attempts
// (its record says dead until the letter is replayed).
func TestFailedAttemptsAreRecordedUntilTheItemIsDone(t *testing.T) {
	js := startQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := testQueue
	q.Attempts = "test"
	backoff := 2 * time.Second
	cfg := workqueue.Config{MaxDeliver: 3, Backoff: []time.Duration{backoff, 100 * time.Millisecond}}
	var got attempts
	w := workqueue.New(js, q, cfg, func(ctx context.Context, job workqueue.Job) error {
		got.add(job)
		if job.Key == "flaky" && job.Attempt > 1 {
			return nil
		}
		return fmt.Errorf("boom %d", job.Attempt)
	})
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, key := range []string{"flaky", "dead"} {
		if err := workqueue.Enqueue(ctx, js, q, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := workqueue.OpenAttempts(ctx, js, q)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the first failure to be recorded", func() bool {
		a, err := rec.Last(ctx, "flaky")
		return err == nil && a.Attempt == 1
	})
	a, _ := rec.Last(ctx, "flaky")
	if a.LastError != "boom 1" || a.MaxAttempts != cfg.MaxDeliver || a.NextRetryAt.Sub(a.At) != backoff || a.Dead || a.Worker == "" {
		t.Fatalf("record after the first failure: %+v", a)
	}
	testutil.Eventually(t, 20*time.Second, "the done item's record to be removed", func() bool {
		_, err := rec.Last(ctx, "flaky")
		return errors.Is(err, workqueue.ErrNoAttempt) && len(got.of("flaky")) == 2
	})
	testutil.Eventually(t, 20*time.Second, "the dead item's record", func() bool {
		a, err := rec.Last(ctx, "dead")
		return err == nil && a.Dead
	})
	a, _ = rec.Last(ctx, "dead")
	if a.Attempt != cfg.MaxDeliver || a.LastError != fmt.Sprintf("boom %d", cfg.MaxDeliver) || !a.NextRetryAt.IsZero() {
		t.Fatalf("record of the dead item: %+v", a)
	}
	letters, err := workqueue.DeadLetters(ctx, js, q, "dead")
	if err != nil || len(letters) != 1 {
		t.Fatalf("dead letters %+v %v", letters, err)
	}
	if err := workqueue.Purge(ctx, js, q, letters); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Last(ctx, "dead"); !errors.Is(err, workqueue.ErrNoAttempt) {
		t.Fatalf("record after the letter left: %v", err)
	}
}
