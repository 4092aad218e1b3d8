// Command whatifdata makes a ferry data dir for the what-if line of
// docs/benchmarks.md: its input log holds -inputs inputs of the what-if's
// synthetic workload (testutil.Workload: CARs of 1–200 KiB from ten big
// and 2,000 small spaces, testutil.TenantSource; a fifth of them with a
// car.piece later; a tick every fourth CAR, 30 s apart), and its
// aggregate log is what the aggregator's runner folded of it, under a
// 2 MiB deal, a 512 KiB min payload and a 10 minute max wait. Then
// ferry whatif and ferry replay run on the same dir:
//
//	whatifdata -data /var/tmp/whatif-1m -inputs 1000000
//	ferry whatif --data /var/tmp/whatif-1m --policy 'deal=1MiB,min=1' --policy 'groupby=source.space,groupmaxwait=1h' --json
//	ferry replay --data /var/tmp/whatif-1m
//
// The embedded NATS server runs on the dir as ferry serve runs it (its
// credentials are made there), and stops when the log is folded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	data := flag.String("data", "", "the ferry data `dir` to make (it must not hold a log yet)")
	inputs := flag.Int("inputs", 1_000_000, "inputs to publish")
	flag.Parse()
	if err := run(*data, *inputs); err != nil {
		fmt.Fprintln(os.Stderr, "whatifdata:", err)
		os.Exit(1)
	}
}

func run(data string, inputs int) error {
	if data == "" {
		return errors.New("-data is required")
	}
	ctx := context.Background()
	creds, err := natsembed.LoadCredentials(node.CredentialsDir(data))
	if err != nil {
		return err
	}
	s, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(data, "jetstream"), Listen: "127.0.0.1:0", Auth: creds})
	if err != nil {
		return err
	}
	defer s.Shutdown()
	opt, err := creds.Option(natsembed.RoleFerry)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(s.ClientURL(), opt)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetlog.NewJetStream(nc)
	if err != nil {
		return err
	}
	if err := jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		return err
	}
	if in, err := streamState(ctx, js, jetlog.StreamIn); err != nil || in.Msgs != 0 {
		return fmt.Errorf("%s: an input log of %d messages (%v): want a new dir", data, in.Msgs, err)
	}
	cfg := events.Settings{DealSize: 2 << 20, MinPayload: 512 << 10, MaxWait: 10 * time.Minute}
	r := aggregator.NewRunner(js, aggregator.RunnerConfig{Fold: cfg, Subjects: jetlog.DefaultSubjects, Holder: "whatifdata",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()

	start := time.Now()
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	sent := 0
	testutil.Workload(math.MaxInt, testutil.TenantSource, func(ev events.Event) bool {
		if _, err = pub.PublishAsync(ev); err != nil {
			return false
		}
		sent++
		if sent%4096 == 0 {
			<-js.PublishAsyncComplete() // a bounded window of unacknowledged publishes
		}
		if sent%100_000 == 0 {
			fmt.Fprintf(os.Stderr, "whatifdata: %d inputs published, %d folded, %s\n", sent, r.Status().LastIn, time.Since(start).Round(time.Second))
		}
		return sent < inputs
	})
	if err != nil {
		return err
	}
	<-js.PublishAsyncComplete()
	if in, err := streamState(ctx, js, jetlog.StreamIn); err != nil || in.Msgs != uint64(inputs) {
		return fmt.Errorf("the input log holds %d messages (%v), %d published", in.Msgs, err, inputs)
	}
	// Folded: the runner applied the last input and the aggregate log
	// holds every batch it appended.
	for {
		agg, err := streamState(ctx, js, jetlog.StreamAgg)
		if err != nil {
			return err
		}
		if st := r.Status(); st.LastIn >= uint64(inputs) && agg.LastSeq >= st.AggSeq {
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("the runner stopped: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	cancel()
	<-done
	fmt.Fprintf(os.Stderr, "whatifdata: %d inputs folded into %d aggregate log messages in %s\n", inputs, r.Status().AggSeq, time.Since(start).Round(time.Second))
	return nil
}

func streamState(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamState, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}
