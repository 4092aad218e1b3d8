package client_test

// These examples are what a storage service writes, and they import only
// ferry's public packages: example_outside_test.go builds this file in a
// module of its own, outside ferry's, so an import a user could not make
// fails there.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Where a storage service finds ferry: its NATS server and HTTP API, and
// the NKey seeds ferry serve writes into its data directory (publish.nk
// may only publish inputs; admin.nk may read the logs and receipts).
var (
	ferryNATS   = "nats://127.0.0.1:4222"
	ferryHTTP   = "127.0.0.1:8080"
	publishSeed = "ferry-data/nats/publish.nk"
	adminSeed   = "ferry-data/nats/admin.nk"
)

// Job 1, publish: one car.replicated per CAR the service has replicated
// to public storage. The message id is the CAR CID, so publishing again
// after a timeout is safe: JetStream answers duplicate.
func ExampleNewPublisher() {
	auth, err := nats.NkeyOptionFromSeed(publishSeed)
	if err != nil {
		fmt.Println(err)
		return
	}
	nc, err := nats.Connect(ferryNATS, auth)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	pub := client.NewPublisher(js, "") // "": ferry's default subject prefix
	ev := &events.CarReplicated{
		Car:  "bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq",
		Size: 1048576, MD5: "9e107d9d372bb6826bd81d3542a419d6",
		URLs: []string{"https://carpark.example/bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq.car"},
	}
	first, err := pub.Publish(ctx, ev)
	if err != nil {
		fmt.Println(err)
		return
	}
	again, err := pub.Publish(ctx, ev)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("stored at sequence", first.Seq, "duplicate:", first.Duplicate)
	fmt.Println("retried:", again.Seq, "duplicate:", again.Duplicate)
}

// Job 1 over HTTP instead: ferry answers each event with its verdict
// (accepted, duplicate, rejected with a reason, conflict), not only
// JetStream's "stored".
func ExampleHTTP_Submit() {
	c := client.NewHTTP(ferryHTTP)
	c.Token = "" // ferry serve's --write-token, when it has one
	results, err := c.Submit(context.Background(), []*events.CarReplicated{{
		Car:  "bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq",
		Size: 1048576, MD5: "9e107d9d372bb6826bd81d3542a419d6",
		URLs: []string{"https://carpark.example/bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq.car"},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results {
		fmt.Println(r.Car, r.Status, r.Reason)
	}
}

// Job 2, read state: where a CAR is, in which aggregate, with which
// deals and inclusion proof.
func ExampleHTTP_Car() {
	c := client.NewHTTP(ferryHTTP)
	ctx := context.Background()
	v, err := c.Car(ctx, "bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq")
	if errors.Is(err, client.ErrNotFound) {
		fmt.Println("ferry has not seen this CAR")
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(v.State, "in aggregate", v.Aggregate, "deals:", len(v.Deals))
}

// Job 2 from the log itself: the whole history of where every CAR went,
// to rebuild a service's own state. Resume from the last sequence seen.
func ExampleReplay() {
	auth, err := nats.NkeyOptionFromSeed(adminSeed)
	if err != nil {
		fmt.Println(err)
		return
	}
	nc, err := nats.Connect(ferryNATS, auth)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	aggregateOf := map[string]uint64{} // CAR → aggregate
	var last uint64                    // store it to resume from last+1
	err = client.Replay(context.Background(), js, last+1, func(seq uint64, b events.Batch) error {
		for _, d := range b.Decisions {
			if d.Car != "" && d.Aggregate != 0 {
				aggregateOf[d.Car] = d.Aggregate
			}
		}
		last = seq
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(aggregateOf), "CARs placed, up to log sequence", last)
}

// Job 3, receipts: a deal receipt per CAR once its aggregate has deals.
// A durable consumer remembers what was handled, so the service resumes
// where it stopped after a restart; a handler error leaves that receipt
// to be delivered again.
func ExampleSubscribeReceipts() {
	auth, err := nats.NkeyOptionFromSeed(adminSeed)
	if err != nil {
		fmt.Println(err)
		return
	}
	nc, err := nats.Connect(ferryNATS, auth)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	// A service follows receipts until it stops; Once returns after
	// those present now, as a periodic job would.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	from := client.From{Durable: "my-service", Once: true}
	err = client.SubscribeReceipts(ctx, js, from, func(seq uint64, r wire.Receipt) error {
		fmt.Println(r.Car, r.Status, "aggregate", r.Aggregate, "deals:", len(r.Deals))
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
}
