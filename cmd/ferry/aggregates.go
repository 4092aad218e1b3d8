package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/wire"
)

func runAggregates(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("aggregates", "aggregates [flags] [--group G] [ID | close [ID | --group G] | reoffer ID | fail ID]", stderr)
	api := serverFlags(fs, defaultHTTP, "")
	state := fs.String("state", "", "only aggregates in this state")
	limit := fs.Int("limit", 100, "aggregates (or pieces of one) to show")
	after := fs.Int("after", -1, "list after this id (or, for one aggregate, this piece position)")
	reason := fs.String("reason", "", "why, for fail (recorded with the failure)")
	group := fs.String("group", "", "list only this group's aggregates; close without an ID: close this group's INGESTING aggregate (default: the shared pool's)")
	args, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	c := api.client()
	orders := map[string]func(uint64) error{
		"close":   func(id uint64) error { return c.CloseAggregate(ctx, id) },
		"reoffer": func(id uint64) error { return c.ReofferAggregate(ctx, id) },
		"fail":    func(id uint64) error { return c.FailAggregate(ctx, id, *reason) },
	}
	if *group != "" && len(args) != 0 && (len(args) != 1 || args[0] != "close") {
		fs.Usage()
		return fmt.Errorf("%w: --group goes with the listing, or with close and no ID", errUsage)
	}
	if len(args) == 1 && args[0] == "close" {
		// Without an id, close is "close what is filling now": a reader
		// need not look up the INGESTING aggregate's id first.
		id, err := filling(ctx, c, *group)
		if err != nil {
			return err
		}
		args = append(args, strconv.FormatUint(id, 10))
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
		return listAggregates(ctx, c, *group, *state, *after, *limit, stdout)
	}
	fs.Usage()
	return fmt.Errorf("%w: aggregates [ID | close [ID] | reoffer ID | fail ID]", errUsage)
}

// listAggregates prints a page of aggregates, with a GROUP column (last:
// groups' names can be long) when one of them was filled for a group.
func listAggregates(ctx context.Context, c *client.HTTP, group, state string, after, limit int, stdout io.Writer) error {
	page, err := c.GroupAggregates(ctx, group, state, uint64(max(after, 0)), limit)
	if err != nil {
		return err
	}
	grouped := slices.ContainsFunc(page.Aggregates, func(a wire.AggregateView) bool { return a.Group != "" })
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	header := "ID\tSTATE\tCARS\tPAYLOAD\tCLOSED\tPIECE"
	if grouped {
		header += "\tGROUP"
	}
	fmt.Fprintln(tw, header)
	for _, a := range page.Aggregates {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s", a.ID, a.State, a.Count, a.Payload, a.Closed, a.Piece)
		if grouped {
			fmt.Fprintf(tw, "\t%s", cmp.Or(a.Group, "(pool)"))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != 0 {
		fmt.Fprintf(stdout, "(more: --after %d)\n", page.Next)
	}
	return nil
}

// filling is the INGESTING aggregate of group ("": the shared pool's).
// With a single INGESTING aggregate and no group asked for, that one,
// whatever it fills for; with several and no pool's among them, an error
// listing them, so that close never picks a group's aggregate unasked.
func filling(ctx context.Context, c *client.HTTP, group string) (uint64, error) {
	live, err := c.Ingesting(ctx)
	if err != nil {
		return 0, err
	}
	if len(live) == 1 && group == "" {
		return live[0].ID, nil
	}
	var ids []string
	for _, a := range live {
		if a.Group == group {
			return a.ID, nil
		}
		ids = append(ids, fmt.Sprintf("%d (group %q)", a.ID, a.Group))
	}
	switch {
	case len(live) == 0:
		return 0, errors.New("no aggregate is INGESTING")
	case group != "":
		return 0, fmt.Errorf("no INGESTING aggregate of group %q; INGESTING: %s", group, strings.Join(ids, ", "))
	}
	return 0, fmt.Errorf("no INGESTING aggregate of the shared pool; name one: --group G or its ID, of %s", strings.Join(ids, ", "))
}
