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

// runFunc runs one command; every command writes to the writers given.
type runFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error

// command is one subcommand: Run dispatches on name and `ferry help` lists
// name, args and summary, both from the same table, so a command cannot be
// dispatchable yet missing from the help.
type command struct {
	name    string
	args    string // what follows the name in the help line, if anything
	summary string
	run     runFunc
}

// commands are ferry's subcommands in the order `ferry help` lists them.
var commands = []command{
	{"serve", "", "run ferry: embedded NATS (or --nats URL), aggregator, read models, HTTP API", runServe},
	{"publish", "", "send car.replicated events and count ferry's answers (flags, --dir, JSON lines)", runPublish},
	{"status", "CID... | --file F", "where CARs are: state, aggregate, inclusion proof, deals, failed piece work", runStatus},
	{"pin", "CID", "pin a CID: ferry fetches its DAG into a CAR and deals it (--name, --origin)", runPin},
	{"pins", "", "list pins as JSON lines (--status, --cid)", runPins},
	{"aggregates", "", "list aggregates; 'aggregates ID' shows one; 'aggregates close|reoffer|fail ID' orders one; 'aggregates close' closes the INGESTING one", runAggregates},
	{"replay", "", "rebuild the read models from the logs, replacing them only once whole", runReplay},
	{"receipts", "", "print deal receipts as JSON lines (--follow to keep going)", runReceipts},
	{"commp", "", "piece CID, sizes, md5 and roots of a CAR file, URL or stdin", runCommp},
	{"pack", "DIR", "pack a directory tree into CARs ready for deals, with a manifest (--out, --publish)", runPack},
	{"spade-sim", "", "a deal engine simulator to try ferry end to end", runSpadeSim},
	{"piece-worker", "", "compute piece CIDs for queued CARs, on any machine", runPieceWorker},
	{"fetch-worker", "", "fetch pinned CIDs into a CAR store, on any machine", runFetchWorker},
	{"pack-worker", "", "build the CARs of ferry pack --nats, on any machine", runPackWorker},
	{"dlq", "", "list, replay or purge piece, fetch and pack work that ran out of attempts", runDLQ},
	{"audit", "", "prove from the logs that nothing was lost or doubled", runAudit},
}

// Run dispatches a subcommand; every command writes to the writers given.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest, stdin, stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, name)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `ferry — folds replicated CARs into FRC-0058 aggregates and Filecoin deals

Usage: ferry <command> [flags]

Commands:
`)
	for _, c := range commands {
		label := c.name
		if c.args != "" {
			label += " " + c.args
		}
		fmt.Fprintf(w, "  %-12s %s\n", label, c.summary)
	}
	fmt.Fprint(w, `
Every command takes -h. Flags can also be set as FERRY_<FLAG> environment
variables (FERRY_DEAL_SIZE=8MiB).
`)
}
