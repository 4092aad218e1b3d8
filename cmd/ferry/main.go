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
	"runtime/debug"
	"sync/atomic"
	"syscall"
)

func main() {
	// The first SIGINT or SIGTERM cancels ctx: every command stops within
	// a second and says what it did. After Ctrl-C the exit status tells
	// the shell it was interrupted (130). SIGTERM is how a service manager
	// stops a server: one that stopped cleanly exits 0 (systemd and
	// Kubernetes count 143 as a failure), and a command it cut short
	// exits 1. A second signal gets Go's default: the process dies at
	// once.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Value
	go func() {
		s := <-sigs
		got.Store(s)
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		cancel()
	}()
	err := Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	sig, _ := got.Load().(os.Signal)
	os.Exit(report(err, sig, os.Stderr))
}

// Exit statuses, the same for every command (`ferry help` lists them).
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitRejected = 3 // publish: every event answered, some rejected or in conflict
)

// report prints err once, prefixed "ferry: ", and returns the exit status:
// 0 for success and for -h, 2 for a usage error (the flag package has
// printed the usage), 3 for publish's rejections, 130 after Ctrl-C
// stopped the command, 1 for any other failure (a command SIGTERM cut
// short included).
func report(err error, sig os.Signal, stderr io.Writer) int {
	code := exitFailure
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		code = exitOK
	case errors.Is(err, errUsage):
		code = exitUsage
	case errors.Is(err, errRejected):
		code = exitRejected
	}
	if sig == os.Interrupt {
		code = 128 + int(syscall.SIGINT)
	}
	// A bare context.Canceled only says the signal came; the command has
	// printed what it did.
	if code != exitOK && err != nil && err != context.Canceled {
		fmt.Fprintln(stderr, "ferry:", err)
	}
	return code
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
	{"aggregates", "", "list aggregates; 'aggregates ID' shows one; 'aggregates close|reoffer|fail ID' orders one; 'aggregates close [--group G]' closes the pool's (or G's) INGESTING one", runAggregates},
	{"settings", "[set]", "print the settings the log is folded under; 'settings set' changes the policy (--min-payload, --max-wait, --group-by, --group-max-wait) from the next input on", runSettings},
	{"replay", "", "rebuild the read models from the logs, replacing them only once whole", runReplay},
	{"whatif", "", "fold the input log in memory under other policies (--policy deal=,min=,maxwait=,groupby=,groupmaxwait=) and report what each would have done", runWhatif},
	{"receipts", "", "print deal receipts as JSON lines (--follow to keep going)", runReceipts},
	{"commp", "", "piece CID, sizes, md5 and roots of a CAR file, URL or stdin", runCommp},
	{"pack", "DIR", "pack a directory tree into CARs ready for deals, with a manifest (--out, --publish)", runPack},
	{"spade-sim", "", "a deal engine simulator to try ferry end to end", runSpadeSim},
	{"piece-worker", "", "compute piece CIDs for queued CARs, on any machine", runPieceWorker},
	{"fetch-worker", "", "fetch pinned CIDs into a CAR store, on any machine", runFetchWorker},
	{"pack-worker", "", "build the CARs of ferry pack --nats, on any machine", runPackWorker},
	{"dlq", "", "list, replay or purge piece, fetch and pack work that ran out of attempts", runDLQ},
	{"audit", "", "prove from the logs that nothing was lost or doubled", runAudit},
	{"version", "", "ferry's version, VCS revision and its time, and the Go that built it (also --version)", runVersion},
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
	case "--version":
		return runVersion(ctx, rest, stdin, stdout, stderr)
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
ferry help (or -h, --help) prints this; ferry --version is ferry version.
Every command takes -h. Flags can also be set as FERRY_<FLAG> environment
variables (FERRY_DEAL_SIZE=8MiB); the command line wins.

Conventions:
  --server, FERRY_SERVER   where ferry serve's HTTP API is, host:port or URL
                           (default `+defaultHTTP+`), for every client command
  --token, FERRY_TOKEN     bearer token sent with reads and writes (serve's
                           --read-token or --write-token)
  --nats, NATS_URL         NATS server of the commands that always talk to
                           NATS (receipts, audit, dlq, the workers)
  --log-format json|text   log lines of serve, the workers and spade-sim
  --progress auto|always|never
                           progress lines on stderr of publish --dir, replay,
                           whatif, audit and pack (auto: when stderr is a
                           terminal)

Exit status: 0 done (and -h); 1 failed; 2 usage error; 3 publish: some
events rejected or in conflict; 130 stopped by Ctrl-C, after printing
what was done. On SIGTERM serve, spade-sim and the workers stop cleanly
and exit 0; other commands it cuts short exit 1.
`)
}

// runVersion prints what runtime/debug.ReadBuildInfo knows of this
// binary: the module version; the VCS revision, its commit time and the
// modified flag that `go build` stamps in a checkout; the Go version.
// There is no build time in it: the commit time is what a build from a
// clean tree can be told by.
func runVersion(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("%w: version takes no arguments", errUsage)
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("no build information in this binary")
	}
	fmt.Fprint(stdout, versionText(info))
	return nil
}

func versionText(info *debug.BuildInfo) string {
	setting := map[string]string{"vcs.revision": "unknown", "vcs.time": "unknown", "vcs.modified": "unknown"}
	for _, s := range info.Settings {
		if _, ok := setting[s.Key]; ok {
			setting[s.Key] = s.Value
		}
	}
	return fmt.Sprintf("ferry %s\n  module:   %s\n  revision: %s\n  modified: %s\n  time:     %s\n  go:       %s\n",
		info.Main.Version, info.Main.Path, setting["vcs.revision"], setting["vcs.modified"], setting["vcs.time"], info.GoVersion)
}
