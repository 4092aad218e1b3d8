package client_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A storage service publishes one car.replicated per replicated CAR. The
// message id is the CAR CID, so publishing again after a timeout is safe.
func ExampleNewPublisher() {
	dir, _ := os.MkdirTemp("", "ferry-example")
	defer os.RemoveAll(dir)
	srv, _ := natsembed.Start(natsembed.Config{Dir: dir, Listen: "127.0.0.1:0"})
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	_ = jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects})

	pub := client.NewPublisher(js, "")
	ev := &events.CarReplicated{
		Car:  "bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq",
		Size: 1048576, MD5: "9e107d9d372bb6826bd81d3542a419d6",
		URLs: []string{"https://carpark.example/bagbaierajl3x5tj3d5zt4xtmoufcdqi2ccqbkl4ibt4ttvzwvghd2tbqylvq.car"},
	}
	first, _ := pub.Publish(ctx, ev)
	again, _ := pub.Publish(ctx, ev)
	fmt.Println("stored at sequence", first.Seq, "duplicate:", first.Duplicate)
	fmt.Println("retried:", again.Seq, "duplicate:", again.Duplicate)
	// Output:
	// stored at sequence 1 duplicate: false
	// retried: 1 duplicate: true
}
