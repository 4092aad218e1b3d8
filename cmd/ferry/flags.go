package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// newFlags returns a flag set for a command that reports to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry %s\n\nFlags (also FERRY_<FLAG> in the environment):\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse applies FERRY_* environment variables, then the command line, which
// wins.
func parse(fs *flag.FlagSet, args []string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "FERRY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
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
