package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
)

// newFlags returns a flag set for a command that reports to stderr. The
// flag package prints nothing itself: -h prints the usage (exit 0), a
// bad flag the usage and then, from main, the error once (exit 2).
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry %s\n\nFlags (also FERRY_<FLAG> in the environment):\n", synopsis)
		// A copy without the old names kept as aliases.
		shown := flag.NewFlagSet(name, flag.ContinueOnError)
		shown.SetOutput(stderr)
		fs.VisitAll(func(f *flag.Flag) {
			if _, old := f.Value.(aliasValue); !old {
				shown.Var(f.Value, f.Name, f.Usage)
				shown.Lookup(f.Name).DefValue = f.DefValue
			}
		})
		shown.PrintDefaults()
	}
	return fs
}

// aliasValue marks an old flag name that sets the same value as its new
// one and is left out of the usage.
type aliasValue struct{ flag.Value }

// alias keeps old as a hidden name of the flag now called name.
func alias(fs *flag.FlagSet, old, name string) {
	fs.Var(aliasValue{fs.Lookup(name).Value}, old, "old name of --"+name)
}

// parse applies NATS_URL (natsflags.go) and FERRY_* environment
// variables, then the command line, which wins. Anything wrong with them
// is a usage error (exit 2).
func parse(fs *flag.FlagSet, args []string) error {
	if err := natsURLFromEnv(fs); err != nil {
		return err
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "FERRY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%w: %s=%q: %v", errUsage, env, v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	return parseArgs(fs, args)
}

// parseArgs is fs.Parse with a bad flag made a usage error.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err) // the flag package printed the usage
	}
	return nil
}

// apiFlags are how a client command finds ferry serve's HTTP API: the
// same --server (FERRY_SERVER) and --token (FERRY_TOKEN) everywhere.
type apiFlags struct {
	server, token string
}

// serverFlags defines --server with def as its default ("" where the API
// is optional) and --token, with --write-token kept as its old name.
func serverFlags(fs *flag.FlagSet, def, what string) *apiFlags {
	a := &apiFlags{}
	fs.StringVar(&a.server, "server", def, "ferry serve's HTTP API, host:port or `URL`"+what)
	fs.StringVar(&a.token, "token", "", "bearer `token` sent with every request: ferry serve's --write-token for writes, its --read-token (or the write token) for reads")
	alias(fs, "write-token", "token")
	return a
}

func (a *apiFlags) client() *client.HTTP {
	c := client.NewHTTP(a.server)
	c.Token = a.token
	return c
}

// logFlags defines --log-format; the function it returns makes the
// command's logger on stderr at level.
func logFlags(fs *flag.FlagSet) func(stderr io.Writer, level slog.Level) (*slog.Logger, error) {
	format := fs.String("log-format", "text", "log lines as `text` (key=value) or json (one object a line)")
	return func(stderr io.Writer, level slog.Level) (*slog.Logger, error) {
		opts := &slog.HandlerOptions{Level: level}
		switch *format {
		case "text":
			return slog.New(slog.NewTextHandler(stderr, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(stderr, opts)), nil
		}
		return nil, fmt.Errorf("%w: --log-format %q: want json or text", errUsage, *format)
	}
}

// progressFlags defines --progress; the function it returns says whether
// the command draws progress lines on stderr.
func progressFlags(fs *flag.FlagSet) func(stderr io.Writer) (bool, error) {
	progress := fs.String("progress", "auto", "progress lines on stderr: auto (when stderr is a terminal), always, never")
	return func(stderr io.Writer) (bool, error) {
		switch *progress {
		case "auto":
			return isTerminal(stderr), nil
		case "always":
			return true, nil
		case "never":
			return false, nil
		}
		return false, fmt.Errorf("%w: --progress %q: want auto, always or never", errUsage, *progress)
	}
}

// parseMixed is parse for a command whose operands may come before or
// between its flags (ferry pack DIR --out OUT); it returns the operands.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	var ops []string
	for fs.NArg() > 0 {
		ops = append(ops, fs.Arg(0))
		if err := parseArgs(fs, fs.Args()[1:]); err != nil {
			return nil, err
		}
	}
	return ops, nil
}

// size is a byte size flag accepting 4096, 8MiB, 32GiB.
type size uint64

func (s *size) String() string { return formatSize(uint64(*s)) }

func (s *size) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

var units = []struct {
	suffix string
	mult   uint64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

func parseSize(v string) (uint64, error) {
	v = strings.TrimSpace(v)
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("size %q: want a whole number with B, KiB, MiB, GiB or TiB", v)
			}
			if n > math.MaxUint64/u.mult {
				return 0, fmt.Errorf("size %q: more than 2^64 bytes", v)
			}
			return n * u.mult, nil
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want bytes or a number with KiB, MiB, GiB, TiB", v)
	}
	return n, nil
}

func formatSize(n uint64) string {
	for _, u := range units {
		if n >= u.mult && n%u.mult == 0 && u.mult > 1 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return strconv.FormatUint(n, 10)
}

// strList is a repeatable string flag.
type strList []string

func (l *strList) String() string     { return strings.Join(*l, ",") }
func (l *strList) Set(v string) error { *l = append(*l, v); return nil }

// policyFlags are the fetch policy's flags, on every command that fetches
// URLs it was given: serve, piece-worker, commp.
type policyFlags struct {
	allowPrivate bool
	allow        strList
}

func fetchPolicyFlags(fs *flag.FlagSet) *policyFlags {
	f := &policyFlags{}
	fs.BoolVar(&f.allowPrivate, "fetch-allow-private", false,
		"fetch CARs from loopback, private, link-local and other non-public addresses too (CARs on a private network; tests)")
	fs.Var(&f.allow, "fetch-allow",
		"also fetch from this `CIDR`, IP or IP:port, which the fetch policy refuses otherwise (repeatable or comma-separated)")
	return f
}

// policy is the fetch policy the flags describe.
func (f *policyFlags) policy() (*urlpolicy.Policy, error) {
	cfg := urlpolicy.Config{AllowPrivate: f.allowPrivate}
	for _, list := range f.allow {
		for s := range strings.SplitSeq(list, ",") {
			r, err := urlpolicy.ParseRule(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%w: --fetch-allow: %v", errUsage, err)
			}
			cfg.Allow = append(cfg.Allow, r)
		}
	}
	return urlpolicy.New(cfg), nil
}
