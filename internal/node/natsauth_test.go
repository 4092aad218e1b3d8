package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// signedIn is a connection of one role to the node's embedded server,
// recording the permission violations the server reports.
type signedIn struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	mu         sync.Mutex
	violations []string
}

func signIn(t *testing.T, n *Node, role string) *signedIn {
	t.Helper()
	opt, err := n.Creds.Option(role)
	if err != nil {
		t.Fatal(err)
	}
	c := &signedIn{}
	nc, err := nats.Connect(n.NATSURL(), opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatalf("sign in as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// refused asserts that a request on subject gets no answer and that the
// server reports a permission violation for it.
func (c *signedIn) refused(t *testing.T, subject string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if msg, err := c.nc.RequestWithContext(ctx, subject, data); err == nil {
		t.Fatalf("%s was answered: %s", subject, msg.Data)
	}
	testutil.Eventually(t, 5*time.Second, "a permission violation for "+subject, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, v := range c.violations {
			if strings.Contains(v, `"`+subject+`"`) {
				return true
			}
		}
		return false
	})
}

// holds reports whether any message of stream in ferry's account contains
// mark.
func holds(t *testing.T, js jetstream.JetStream, stream string, mark []byte) bool {
	t.Helper()
	found := false
	err := jetlog.Tail(context.Background(), js, stream, 1, false, func(e jetlog.Entry) error {
		found = found || bytes.Contains(e.Data, mark)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	return found
}

func TestTheEmbeddedNATSServerLetsEachUserDoOnlyItsPart(t *testing.T) {
	d := startDealsOn(t, "", 6, spade.SimConfig{Delay: 5 * time.Millisecond}, "")
	n := d.n
	if n.Creds == nil {
		t.Fatal("the embedded server runs without users")
	}

	t.Run("a client without credentials is refused", func(t *testing.T) {
		nc, err := nats.Connect(n.NATSURL())
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous client connected")
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("anonymous connect: %v", err)
		}
	})

	pub := signIn(t, n, natsembed.RolePublish)
	d.js = pub.js
	t.Run("the publish user publishes car.replicated and reads the receipts", func(t *testing.T) {
		d.publishAll(t) // fails on a refused publish or a missing acknowledgement
		d.waitProcessed(t, 60*time.Second)
		testutil.Eventually(t, 20*time.Second, "a receipt for every CAR, read by the publish user", func() bool {
			return len(d.receipts(t)) == len(d.cars)
		})
		// A durable consumer too: created, fetched from and acknowledged.
		ctx := context.Background()
		cons, err := pub.js.CreateOrUpdateConsumer(ctx, jetlog.StreamReceipts, jetstream.ConsumerConfig{
			Durable: "storage-service", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatalf("ack a receipt: %v", err)
		}
	})

	mark := []byte("forged-by-the-publish-user")
	forged := func(typ string) []byte {
		return []byte(`{"type":"` + typ + `","version":1,"at":"9999-12-31T00:00:00Z","note":"` + string(mark) + `"}`)
	}
	sub := jetlog.DefaultSubjects
	t.Run("the publish user cannot publish ferry's internal inputs", func(t *testing.T) {
		for _, typ := range []string{"deal.report", "deal.offered", "car.piece", "car.invalid", "tick", "aggregate.close",
			"pin.requested", "pin.cancelled", "pin.fetching", "pin.fetched", "pin.failed"} {
			pub.refused(t, sub.Input(typ), forged(typ))
		}
		if holds(t, n.JS, jetlog.StreamIn, mark) {
			t.Fatal("a forged input is in FERRY_IN")
		}
	})

	t.Run("the publish user cannot write the aggregate log or the work queue, nor purge or delete", func(t *testing.T) {
		for _, subject := range []string{
			sub.Decisions(), sub.Deals(), sub.Work(d.cars[0].CID.String()), sub.FetchWork(d.cars[0].CID.String()),
			"$JS.API.STREAM.PURGE." + jetlog.StreamFetch,
			"$JS.API.STREAM.PURGE." + jetlog.StreamIn,
			"$JS.API.STREAM.DELETE." + jetlog.StreamReceipts,
			"$JS.API.STREAM.DELETE." + jetlog.StreamAgg,
			"$JS.API.STREAM.CREATE.EVIL",
			"$JS.API.CONSUMER.DELETE." + jetlog.StreamReceipts + ".storage-service",
		} {
			pub.refused(t, subject, forged("aggregate.deals"))
		}
		if holds(t, n.JS, jetlog.StreamAgg, mark) {
			t.Fatal("a forged batch is in FERRY_AGG")
		}
		ctx := context.Background()
		for _, name := range []string{jetlog.StreamIn, jetlog.StreamReceipts} {
			st, err := n.JS.Stream(ctx, name)
			if err != nil || st.CachedInfo().State.Msgs == 0 {
				t.Fatalf("%s after the attempts: %v", name, err)
			}
		}
	})

	t.Run("a push consumer of the publish user cannot deliver receipts into ferry's streams", func(t *testing.T) {
		// JetStream does not check a deliver subject against its creator's
		// permissions; the publish user's own account is what stops this.
		ctx := context.Background()
		before, err := n.JS.Stream(ctx, jetlog.StreamAgg)
		if err != nil {
			t.Fatal(err)
		}
		cons, err := pub.js.CreateOrUpdateConsumer(ctx, jetlog.StreamReceipts, jetstream.ConsumerConfig{
			Durable: "into-the-aggregate-log", DeliverSubject: sub.Deals(), AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.PushBound {
			t.Fatalf("the publish user's consumer found a listener on %s", sub.Deals())
		}
		after, err := n.JS.Stream(ctx, jetlog.StreamAgg)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := after.CachedInfo().State.LastSeq, before.CachedInfo().State.LastSeq; a != b {
			t.Fatalf("FERRY_AGG grew from %d to %d", b, a)
		}
	})

	t.Run("the ferry user runs fetch work: queues and cancels it and publishes its outcomes", func(t *testing.T) {
		// ferry fetch-worker signs in as the ferry user, as piece-worker
		// does (see docs/operations.md, Who connects as whom).
		fw := signIn(t, n, natsembed.RoleFerry)
		ctx := context.Background()
		c := d.cars[0].CID.String()
		if err := fetchworker.Enqueue(ctx, fw.js, sub, fetchworker.Item{CID: c, Since: time.Now()}); err != nil {
			t.Fatalf("queue fetch work: %v", err)
		}
		if err := fetchworker.Cancel(ctx, fw.js, sub, c); err != nil {
			t.Fatalf("cancel fetch work: %v", err)
		}
		p := jetlog.NewPublisher(fw.js, sub)
		for _, ev := range []events.Event{
			&events.PinFetching{CID: c, Attempt: 1, At: time.Now()},
			&events.PinFailed{CID: c, Reason: "signed in as ferry", At: time.Now()},
		} {
			if _, err := p.Publish(ctx, ev); err != nil {
				t.Fatalf("publish %s: %v", ev.Kind(), err)
			}
		}
		if !holds(t, n.JS, jetlog.StreamIn, []byte("signed in as ferry")) {
			t.Fatal("the ferry user's pin.failed is not in FERRY_IN")
		}
	})

	t.Run("the admin user may do anything", func(t *testing.T) {
		admin := signIn(t, n, natsembed.RoleAdmin)
		if _, err := admin.js.Stream(context.Background(), jetlog.StreamAgg); err != nil {
			t.Fatalf("admin reads FERRY_AGG: %v", err)
		}
	})
}

func TestTheEmbeddedServersCredentialsOutliveARestart(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, testConfig(dir, ""))
	key := n.Creds.PublicKey(natsembed.RolePublish)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, testConfig(dir, ""))
	if got := n.Creds.PublicKey(natsembed.RolePublish); got != key || key == "" {
		t.Fatalf("publish key %q after a restart, %q before", got, key)
	}
	signIn(t, n, natsembed.RolePublish)
}

func TestTheEmbeddedServerWithoutUsersIsAChoice(t *testing.T) {
	cfg := testConfig(t.TempDir(), "")
	cfg.NATSNoAuth = true
	n := startNode(t, cfg)
	if n.Creds != nil {
		t.Fatal("credentials without users")
	}
	nc, err := nats.Connect(n.NATSURL())
	if err != nil {
		t.Fatalf("anonymous connect with NATSNoAuth: %v", err)
	}
	nc.Close()
}

// clusterConfig is the nats-server configuration docs/operations.md gives
// for an existing cluster, with keys for the three users and storage in
// dir.
func clusterConfig(t *testing.T, dir string, keys map[string]string) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	// The block of Security › NATS: the one with ferry's accounts and no
	// cluster (the 3-node setup's blocks come from docs/cluster).
	var conf string
	for rest := string(doc); conf == ""; {
		var block string
		var ok, ok2 bool
		_, rest, ok = strings.Cut(rest, "```conf\n")
		block, rest, ok2 = strings.Cut(rest, "```")
		if !ok || !ok2 {
			t.Fatal("docs/operations.md has no conf block with ferry's accounts")
		}
		if strings.Contains(block, "accounts {") && !strings.Contains(block, "cluster {") {
			conf = block
		}
	}
	return strings.NewReplacer("/var/lib/nats", dir,
		"UFERRY_PUBLIC_KEY", keys[natsembed.RoleFerry], "UADMIN_PUBLIC_KEY", keys[natsembed.RoleAdmin],
		"UPUBLISH_PUBLIC_KEY", keys[natsembed.RolePublish]).Replace(conf)
}

func TestTheDocumentedClusterConfigurationGivesTheSameRoles(t *testing.T) {
	creds, err := natsembed.LoadCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, role := range natsembed.Roles {
		keys[role] = creds.PublicKey(role)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(clusterConfig(t, t.TempDir(), keys)); err != nil {
		t.Fatalf("the documented configuration: %v", err)
	}
	s := runServer(t, opts)
	cfg := testConfig(t.TempDir(), s.ClientURL())
	ferry, err := creds.Option(natsembed.RoleFerry)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATSOptions, cfg.PublishAccount = []nats.Option{ferry}, true
	n := startNode(t, cfg)
	n.Creds = creds // for signIn; ferry did not make them
	pub := signIn(t, n, natsembed.RolePublish)

	ctx := context.Background()
	ev := testutil.Replicated(7, 5000, true)
	if _, err := jetlog.NewPublisher(pub.js, jetlog.DefaultSubjects).Publish(ctx, ev); err != nil {
		t.Fatalf("the publish user's car.replicated: %v", err)
	}
	pub.refused(t, jetlog.DefaultSubjects.Input("tick"), []byte(`{"type":"tick","version":1,"time":"9999-12-31T00:00:00Z"}`))
	pub.refused(t, "$JS.API.STREAM.PURGE."+jetlog.StreamIn, nil)

	// A receipt ferry stores reaches the publish user through the mirror.
	receipt := []byte(`{"car":"` + ev.Car + `","aggregate":1}`)
	if _, err := n.JS.Publish(ctx, jetlog.DefaultSubjects.Receipt(ev.Car), receipt); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the receipt in the publish account", func() bool {
		var got []string
		err := client.SubscribeReceipts(ctx, pub.js, client.From{Once: true}, func(_ uint64, r wire.Receipt) error {
			got = append(got, r.Car)
			return nil
		})
		return err == nil && len(got) == 1 && got[0] == ev.Car
	})
}
