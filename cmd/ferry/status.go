package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

func runStatus(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [flags] CID", stderr)
	api := serverFlags(fs, defaultHTTP, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: status takes one CAR CID", errUsage)
	}
	v, err := api.client().Car(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	return printJSON(stdout, v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
