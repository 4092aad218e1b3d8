//go:build crash

package crash

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bins are the binaries built once for every test of the package.
var bins struct {
	ferry, natsd string
}

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m, "crash", func(dir string) error {
		bins.ferry = filepath.Join(dir, "ferry")
		bins.natsd = filepath.Join(dir, "natsd")
		flags := []string{"-tags", "crash"}
		if os.Getenv("CRASH_RACE") == "1" {
			flags = append(flags, "-race")
		}
		for _, b := range []struct{ out, pkg string }{{bins.ferry, "./cmd/ferry"}, {bins.natsd, "./tests/crash/natsd"}} {
			if err := proctest.Build(b.out, b.pkg, flags...); err != nil {
				return err
			}
		}
		return nil
	}))
}

// params are the knobs of a run, from the environment.
type params struct {
	N          int           // CRASH_N: events (CARs)
	Kills      int           // CRASH_KILLS: SIGKILLs of ferry serve
	NATSKills  int           // CRASH_NATS_KILLS: SIGKILLs of the NATS server
	Seed       uint64        // CRASH_SEED
	DealSize   string        // CRASH_DEAL_SIZE
	MinPayload string        // CRASH_MIN_PAYLOAD
	Failure    string        // CRASH_FAILURE_RATE of the deal engine
	Publish    time.Duration // CRASH_PUBLISH: how long publishing is spread over
	Converge   time.Duration // CRASH_CONVERGE: bound on reaching DEAL_PROCESSED after the crashes
	Workers    int           // CRASH_PIECE_WORKERS
}

func loadParams(t *testing.T) params {
	p := params{
		N:          proctest.EnvInt("CRASH_N", 2000),
		Kills:      proctest.EnvInt("CRASH_KILLS", 10),
		NATSKills:  proctest.EnvInt("CRASH_NATS_KILLS", 5),
		DealSize:   proctest.EnvStr("CRASH_DEAL_SIZE", "4MiB"),
		MinPayload: proctest.EnvStr("CRASH_MIN_PAYLOAD", "16KiB"),
		Failure:    proctest.EnvStr("CRASH_FAILURE_RATE", "0.05"),
		Workers:    proctest.EnvInt("CRASH_PIECE_WORKERS", 2),
	}
	p.Seed = uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("CRASH_SEED"), 10, 64); err == nil {
		p.Seed = s
	}
	p.Publish = proctest.EnvDur("CRASH_PUBLISH", 45*time.Second)
	p.Converge = proctest.EnvDur("CRASH_CONVERGE", 5*time.Minute+time.Duration(p.N)*5*time.Millisecond)
	t.Logf("params: N=%d kills=%d natsKills=%d seed=%d (CRASH_SEED) deal=%s minPayload=%s failureRate=%s publish=%s converge=%s",
		p.N, p.Kills, p.NATSKills, p.Seed, p.DealSize, p.MinPayload, p.Failure, p.Publish, p.Converge)
	return p
}

// runFerry runs the ferry binary to completion and returns its output.
func runFerry(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	return proctest.Run(ctx, timeout, bins.ferry, args...)
}

// streamLast is a stream's last sequence and message count.
func streamState(ctx context.Context, js jetstream.JetStream, name string) (last, msgs uint64, err error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.State.LastSeq, info.State.Msgs, nil
}

// connect opens a client that reconnects for ever.
func connect(t *testing.T, url string, signIn ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("crash test"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}, signIn...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
