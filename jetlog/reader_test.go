package jetlog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natscluster"
	"github.com/ferry-dev/ferry/jetlog"
)

// A tail that follows a log goes on past the death of the server leading
// the stream, and past the death of the server its own connection is on:
// every message once, in order, none missing.
func TestATailFollowsTheStreamPastItsLeadersDeath(t *testing.T) {
	c := natscluster.Start(t, 3)
	_, js := c.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Eventually(30*time.Second, "ferry's streams on three replicas", func() error {
		return jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects, Replicas: 3})
	})
	nc, tjs := c.Connect()
	var (
		mu   sync.Mutex
		seqs []uint64
	)
	tctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- jetlog.Tail(tctx, tjs, jetlog.StreamIn, 1, true, func(e jetlog.Entry) error {
			mu.Lock()
			seqs = append(seqs, e.Seq)
			mu.Unlock()
			return nil
		})
	}()
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	sent := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			sent++
			ev := &events.Tick{Time: time.Unix(int64(sent), 0).UTC()}
			for {
				if _, err := pub.Publish(ctx, ev); err == nil {
					break
				} else if ctx.Err() != nil {
					t.Fatal(err)
				}
			}
		}
	}
	delivered := func(what string) {
		t.Helper()
		c.Eventually(30*time.Second, what, func() error {
			mu.Lock()
			defer mu.Unlock()
			for i, s := range seqs {
				if s != uint64(i+1) {
					return fmt.Errorf("message %d of the tail is sequence %d", i+1, s)
				}
			}
			if len(seqs) != sent {
				return fmt.Errorf("%d of %d delivered", len(seqs), sent)
			}
			return nil
		})
	}
	publish(50)
	delivered("the first 50")
	for _, who := range []string{"the stream's leader", "the server the tail's connection is on"} {
		i := c.StreamLeader(jetlog.StreamIn)
		if who != "the stream's leader" {
			for j, s := range c.Servers {
				if s != nil && s.Name() == nc.ConnectedServerName() {
					i = j
				}
			}
		}
		c.Kill(i)
		publish(50)
		delivered("50 more after the death of " + who)
		c.Restart(i)
	}
	stop()
	if err := <-done; err != nil && ctx.Err() == nil && tctx.Err() == nil {
		t.Fatal(err)
	}
}
