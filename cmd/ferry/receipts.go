package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
)

func runReceipts(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("receipts", "receipts [--follow] [--from SEQ | --durable NAME] [--car CID]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL`")
	follow := fs.Bool("follow", false, "keep printing new receipts")
	var from client.From
	fs.Uint64Var(&from.Seq, "from", 0, "start at this receipts stream sequence")
	fs.StringVar(&from.Durable, "durable", "", "resume where the durable consumer `NAME` stopped")
	fs.StringVar(&from.Car, "car", "", "only the receipts of this CAR")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	auth := natsAuthFlags(fs, natsembed.RolePublish)
	if err := parse(fs, args); err != nil {
		return err
	}
	nc, js, err := auth.connect(*natsURL, "ferry receipts")
	if err != nil {
		return err
	}
	defer nc.Close()
	from.Once = !*follow
	from.Subjects = jetlog.Subjects{Prefix: *prefix}
	enc := json.NewEncoder(stdout)
	printed := 0
	err = client.SubscribeReceipts(ctx, js, from, func(_ uint64, r wire.Receipt) error {
		printed++
		return enc.Encode(r)
	})
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "receipts: stopped after printing %d receipts\n", printed)
	}
	return err
}
