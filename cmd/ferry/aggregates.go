package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/ferry-dev/ferry/client"
)

func runAggregates(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("aggregates", "aggregates [flags] [ID | close [ID] | reoffer ID | fail ID]", stderr)
	api := serverFlags(fs, defaultHTTP, "")
	state := fs.String("state", "", "only aggregates in this state")
	limit := fs.Int("limit", 100, "aggregates (or pieces of one) to show")
	after := fs.Int("after", -1, "list after this id (or, for one aggregate, this piece position)")
	reason := fs.String("reason", "", "why, for fail (recorded with the failure)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c := api.client()
	orders := map[string]func(uint64) error{
		"close":   func(id uint64) error { return c.CloseAggregate(ctx, id) },
		"reoffer": func(id uint64) error { return c.ReofferAggregate(ctx, id) },
		"fail":    func(id uint64) error { return c.FailAggregate(ctx, id, *reason) },
	}
	args = fs.Args()
	if len(args) == 1 && args[0] == "close" {
		// Without an id, close is "close what is filling now": a reader
		// need not look up the INGESTING aggregate's id first.
		page, err := c.Aggregates(ctx, "INGESTING", 0, 1)
		if err != nil {
			return err
		}
		if len(page.Aggregates) == 0 {
			return errors.New("no aggregate is INGESTING")
		}
		args = append(args, strconv.FormatUint(page.Aggregates[0].ID, 10))
	}
	switch {
	case len(args) == 2 && orders[args[0]] != nil:
		id, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			return fmt.Errorf("%w: aggregate id %q", errUsage, args[1])
		}
		if err := orders[args[0]](id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s of aggregate %d requested\n", args[0], id)
		return nil
	case len(args) == 1:
		v, err := c.Aggregate(ctx, args[0], *after, *limit)
		if err != nil {
			return err
		}
		return printJSON(stdout, v)
	case len(args) == 0:
		return listAggregates(ctx, c, *state, *after, *limit, stdout)
	}
	fs.Usage()
	return fmt.Errorf("%w: aggregates [ID | close [ID] | reoffer ID | fail ID]", errUsage)
}

func listAggregates(ctx context.Context, c *client.HTTP, state string, after, limit int, stdout io.Writer) error {
	page, err := c.Aggregates(ctx, state, uint64(max(after, 0)), limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCARS\tPAYLOAD\tCLOSED\tPIECE")
	for _, a := range page.Aggregates {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\n", a.ID, a.State, a.Count, a.Payload, a.Closed, a.Piece)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != 0 {
		fmt.Fprintf(stdout, "(more: --after %d)\n", page.Next)
	}
	return nil
}
