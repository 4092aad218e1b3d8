package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ferry-dev/ferry/spade"
)

func runSpadeSim(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("spade-sim", "spade-sim [flags]", stderr)
	listen := fs.String("listen", "127.0.0.1:9000", "listen `address`: POST /offers, GET /offers, GET /oracle, GET /oracle.zst")
	var cfg spade.SimConfig
	fs.StringVar(&cfg.ReportToken, "report-token", "", "bearer token sent to ferry's reportUrl (ferry serve --report-token)")
	fs.StringVar(&cfg.AcceptToken, "accept-token", "", "bearer token offers must carry (ferry serve --deal-engine-token)")
	fs.DurationVar(&cfg.Delay, "delay", 2*time.Second, "wait after checking an offer before reporting")
	fs.Float64Var(&cfg.FailureRate, "failure-rate", 0, "share (0..1) of good offers reported failed, for trials")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the failure draws")
	fs.IntVar(&cfg.Replicas, "deals-per-aggregate", 1, "deals (each with another provider) made per aggregate")
	maxAssemble := size(1 << 30)
	fs.Var(&maxAssemble, "max-assemble", "largest deal whose bytes are assembled and hashed to check the offer")
	fs.StringVar(&cfg.TempDir, "tmp", "", "directory for downloads (default: system temp)")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger(stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	cfg.MaxAssemble = uint64(maxAssemble)
	cfg.Logger = log
	sim, err := spade.NewSimulator(cfg)
	if err != nil {
		return err
	}
	defer sim.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "spade-sim listening\n  offers: http://%s/offers\n  oracle: http://%s/oracle\n", ln.Addr(), ln.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return untilStopped(ctx, stdout, "spade-sim", func(context.Context) error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}
