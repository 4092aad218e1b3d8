package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// progressEvery is how often a progress line is drawn.
var progressEvery = time.Second

// startProgressLines draws line(elapsed) on stderr every progressEvery
// when show is set: on a terminal it redraws one line, elsewhere (with
// --progress always) it writes a line each time, for a log. stop draws no
// more, clearing a terminal's line or writing a last line elsewhere.
func startProgressLines(stderr io.Writer, show bool, line func(elapsed time.Duration) string) (stop func()) {
	if !show {
		return func() {}
	}
	tty := isTerminal(stderr)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				// A terminal's line is cleared; a log gets the last count.
				if tty {
					fmt.Fprint(stderr, "\r\x1b[K")
				} else {
					fmt.Fprintln(stderr, line(time.Since(start)))
				}
				return
			case <-t.C:
				if tty {
					fmt.Fprintf(stderr, "\r%s\x1b[K", line(time.Since(start)))
				} else {
					fmt.Fprintln(stderr, line(time.Since(start)))
				}
			}
		}
	})
	return func() { close(quit); wg.Wait() }
}

// perSecond is n over elapsed, as "1234/s".
func perSecond(n int64, elapsed time.Duration) string {
	if elapsed <= 0 {
		return "0/s"
	}
	return fmt.Sprintf("%.0f/s", float64(n)/elapsed.Seconds())
}

// untilStopped runs a command that works until it is stopped, and then
// says so with how long it ran: the summary of a server or a worker,
// whose work is in its log lines.
func untilStopped(ctx context.Context, stdout io.Writer, name string, run func(context.Context) error) error {
	started := time.Now()
	err := run(ctx)
	if ctx.Err() != nil {
		fmt.Fprintf(stdout, "%s: stopped after %s\n", name, time.Since(started).Round(time.Millisecond))
	}
	return err
}
