// Command ferry gets uploaded CAR files into Filecoin deals. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(2)
	case errors.Is(err, errRejected):
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// Run dispatches a subcommand; every command writes to the writers given.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "publish":
		return runPublish(ctx, rest, stdin, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "aggregates":
		return runAggregates(ctx, rest, stdout, stderr)
	case "replay":
		return runReplay(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	if run, ok := extra[cmd]; ok {
		return run(ctx, rest, stdin, stdout, stderr)
	}
	usage(stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

// extra holds commands registered by other files of this package.
var extra = map[string]func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error{}

func usage(w io.Writer) {
	fmt.Fprint(w, `ferry — folds replicated CARs into FRC-0058 aggregates and Filecoin deals

Usage: ferry <command> [flags]

Commands:
  serve        run ferry: embedded NATS (or --nats URL), aggregator, read models, HTTP API
  publish      send car.replicated events and count ferry's answers (flags, --dir, JSON lines)
  status CID   where a CAR is: state, aggregate, inclusion proof, deals
  aggregates   list aggregates; 'aggregates ID' shows one; 'aggregates close|reoffer|fail ID' orders one
  replay       delete the read models and rebuild them from the logs
  receipts     print deal receipts as JSON lines (--follow to keep going)
  commp        piece CID, sizes, md5 and roots of a CAR file, URL or stdin
  spade-sim    a deal engine simulator to try ferry end to end
  piece-worker compute piece CIDs for queued CARs, on any machine
  dlq          list or replay piece work that ran out of attempts
  audit        prove from the logs that nothing was lost or doubled

Every command takes -h. Flags can also be set as FERRY_<FLAG> environment
variables (FERRY_DEAL_SIZE=8MiB).
`)
}
