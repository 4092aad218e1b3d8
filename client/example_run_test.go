package client_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The NATS examples carry no Output (they need a ferry), so this test
// runs them against what ferry serve sets up: an embedded JetStream with
// its users (the seeds written as ferry serve writes them), ferry's
// streams and the receipts mirror of the publish account.
func TestTheNATSExamplesRunAgainstFerrysServer(t *testing.T) {
	dir := t.TempDir()
	creds, err := natsembed.LoadCredentials(filepath.Join(dir, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Config{Dir: dir, Listen: "127.0.0.1:0", Auth: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	signIn, err := creds.Option(natsembed.RoleFerry)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), signIn)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		t.Fatal(err)
	}
	if err := natsembed.EnsureReceiptsMirror(ctx, nc, 1); err != nil {
		t.Fatal(err)
	}
	// One receipt, as the receipter publishes it, for the subscriber.
	receipt := wire.Receipt{Car: "bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq", Status: "DEAL_PROCESSED", Aggregate: 7}
	b, _ := json.Marshal(receipt)
	if _, err := js.Publish(ctx, jetlog.DefaultSubjects.Receipt(receipt.Car), b); err != nil {
		t.Fatal(err)
	}

	// One batch in the aggregate log, as the aggregator appends it.
	batch, err := events.EncodeBatch(nil, &events.Batch{In: 1, Decisions: []events.Decision{
		{Type: events.DecCarAdded, Car: receipt.Car, Aggregate: 7},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, jetlog.DefaultSubjects.Decisions(), batch); err != nil {
		t.Fatal(err)
	}

	ferryNATS = srv.ClientURL()
	publishSeed = creds.SeedFile(natsembed.RolePublish)
	adminSeed = creds.SeedFile(natsembed.RoleAdmin)
	for _, c := range []struct {
		name string
		run  func()
		want string
	}{
		{"ExampleNewPublisher", ExampleNewPublisher, "stored at sequence 1 duplicate: false\nretried: 1 duplicate: true\n"},
		{"ExampleReplay", ExampleReplay, "1 CARs placed, up to log sequence 1\n"},
		{"ExampleSubscribeReceipts", ExampleSubscribeReceipts, receipt.Car + " DEAL_PROCESSED aggregate 7 deals: 0\n"},
		// The durable consumer resumes after the receipt handled.
		{"ExampleSubscribeReceipts again", ExampleSubscribeReceipts, ""},
	} {
		if got := captureStdout(t, c.run); got != c.want {
			t.Errorf("%s printed\n%q\nwant\n%q", c.name, got, c.want)
		}
	}
}

func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	defer func() { os.Stdout = stdout }()
	f()
	w.Close()
	os.Stdout = stdout
	return strings.ReplaceAll(<-done, "\r\n", "\n")
}
