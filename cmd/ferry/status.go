package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ferry-dev/ferry/client"
)

func runStatus(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [flags] CID [CID...] | status [flags] --file F", stderr)
	flags := serverFlags(fs, defaultHTTP, "")
	file := fs.String("file", "", "read CIDs from `F`, one a line (- for stdin); blank lines and # comments are skipped")
	if err := parse(fs, args); err != nil {
		return err
	}
	if (fs.NArg() == 0) == (*file == "") {
		fs.Usage()
		return fmt.Errorf("%w: status takes CAR CIDs or --file, one of the two", errUsage)
	}
	api := flags.client()
	if fs.NArg() == 1 {
		v, err := api.Car(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		return printJSON(stdout, v)
	}
	cids := fs.Args()
	if *file != "" {
		var err error
		if cids, err = readCIDs(*file, stdin); err != nil {
			return err
		}
	}
	return batchStatus(ctx, api, cids, stdout)
}

// batchStatus prints the status of many CARs, one JSON line each in the
// order given, from the batch call; a CID not found or not a CID is a line
// too, and makes the command fail once every line is printed.
func batchStatus(ctx context.Context, api *client.HTTP, cids []string, stdout io.Writer) error {
	answers, err := api.Cars(ctx, cids)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	failed := 0
	for _, a := range answers {
		if err := enc.Encode(a); err != nil {
			return err
		}
		if a.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d CIDs not found or not CIDs", failed, len(answers))
	}
	return nil
}

// readCIDs reads one CID a line from path, or stdin for "-".
func readCIDs(path string, stdin io.Reader) ([]string, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var cids []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			cids = append(cids, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cids) == 0 {
		return nil, fmt.Errorf("%w: %s holds no CID", errUsage, path)
	}
	return cids, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
