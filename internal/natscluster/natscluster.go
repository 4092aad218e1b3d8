// Package natscluster runs a cluster of NATS servers with JetStream inside
// a test process, on loopback, for tests of what replication does to
// ferry's logs: a server stopped while it leads a stream and restarted on
// its store, a stream left without a quorum.
//
// Rules: every address is 127.0.0.1; each server keeps its store dir and
// its ports across a restart, as a restarted process would; the servers
// are stopped when the test ends.
package natscluster

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Account is the account ferry's streams live in (the server's global
// account, as in natsembed).
const Account = server.DEFAULT_GLOBAL_ACCOUNT

// Cluster is n servers routed to each other. Servers[i] is nil while
// server i is stopped.
type Cluster struct {
	tb      testing.TB
	Servers []*server.Server
	opts    []*server.Options
}

// Start starts n servers with JetStream, each with a store dir under
// tb.TempDir(), and waits until they have elected a JetStream meta
// leader. They stop when the test ends.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	// JetStream's clustering needs every server's routes configured at
	// start, so the route ports are chosen first.
	ports := freePorts(tb, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	c := &Cluster{tb: tb, Servers: make([]*server.Server, n)}
	root := tb.TempDir()
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("s%d", i),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   filepath.Join(root, fmt.Sprintf("s%d", i)),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "ferry-test",
				Host: "127.0.0.1",
				Port: ports[n+i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		c.opts = append(c.opts, o)
	}
	tb.Cleanup(c.stopAll)
	for i := range n {
		c.Restart(i)
	}
	// A meta leader is not enough: until it has every server's stats it
	// places a replicated stream on too few peers and refuses it ("no
	// suitable peers for placement").
	c.Eventually(60*time.Second, "a JetStream meta leader that knows every server", func() error {
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() {
				if peers := s.JetStreamClusterPeers(); len(peers) < n {
					return fmt.Errorf("the meta leader knows %d of %d servers", len(peers), n)
				}
				return nil
			}
		}
		return fmt.Errorf("no meta leader")
	})
	return c
}

// freePorts reserves n loopback ports by listening on them, then frees
// them for the servers.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("reserve a port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// URLs is the client URLs of every server, comma-separated, for a client
// that reconnects to whichever is up.
func (c *Cluster) URLs() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(urls, ",")
}

// Connect opens a client to the cluster that reconnects without end,
// closed when the test ends.
func (c *Cluster) Connect(opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream) {
	c.tb.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		c.tb.Fatalf("connect: %v", err)
	}
	c.tb.Cleanup(nc.Close)
	js, err := jetlog.NewJetStream(nc, opts...)
	if err != nil {
		c.tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Stop shuts server i down at once: no lame-duck period, so the raft
// groups it leads lose their leader as when its process dies.
func (c *Cluster) Stop(i int) {
	s := c.Servers[i]
	if s == nil {
		return
	}
	c.Servers[i] = nil
	s.Shutdown()
	s.WaitForShutdown()
}

// Kill stops server i as its process's death looks to its clients: their
// connections close at once, and they reconnect to another server. (Stop,
// a clean shutdown, closes them only after JetStream has shut down, which
// takes seconds, with every request on them unanswered meanwhile.) Its
// Raft groups still hand their leadership over first, as in any
// in-process shutdown; a process killed outright leaves its followers to
// wait out an election timeout instead.
func (c *Cluster) Kill(i int) {
	s := c.Servers[i]
	if s == nil {
		return
	}
	c.Servers[i] = nil
	kick := func() {
		if cz, err := s.Connz(nil); err == nil {
			for _, ci := range cz.Conns {
				_ = s.DisconnectClientByID(ci.Cid)
			}
		}
	}
	// Before the shutdown takes the server's locks for seconds; clients
	// reconnect to the other servers first.
	kick()
	done := make(chan struct{})
	go func() {
		s.Shutdown()
		close(done)
	}()
	for {
		// Until the shutdown stops taking clients, those that come back
		// are closed again.
		kick()
		select {
		case <-done:
			s.WaitForShutdown()
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Restart starts server i again on its store dir and ports.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	if c.Servers[i] != nil {
		c.tb.Fatalf("server %d is running", i)
	}
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.tb.Fatalf("server %d: %v", i, err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		c.tb.Fatalf("server %d did not start", i)
	}
	c.Servers[i] = s
}

func (c *Cluster) stopAll() {
	for i := range c.Servers {
		c.Stop(i)
	}
}

// Snapshot makes every running server snapshot its replica of stream and
// compact its raft log, as JetStream does on its own once the log grows or
// time passes: a server that was down then catches up from the snapshot
// and the messages after it, not by replaying the log entries it missed.
func (c *Cluster) Snapshot(stream string) error {
	for i, s := range c.Servers {
		if s == nil {
			continue
		}
		if err := s.JetStreamSnapshotStream(Account, stream); err != nil {
			return fmt.Errorf("server %d: snapshot %s: %w", i, stream, err)
		}
	}
	return nil
}

// StreamLeader is the index of the running server leading stream, or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Servers {
		if s != nil && s.JetStreamIsStreamLeader(Account, stream) {
			return i
		}
	}
	return -1
}

// Current is nil when server i's replica of stream is current with its
// raft group and the server's health check of the stream passes; else
// why not, in the server's words.
func (c *Cluster) Current(i int, stream string) error {
	s := c.Servers[i]
	if s == nil {
		return fmt.Errorf("server %d is stopped", i)
	}
	if h := s.Healthz(&server.HealthzOptions{Account: Account, Stream: stream}); h.Status != "ok" {
		return fmt.Errorf("server %d: %s %s", i, h.Status, h.Error)
	}
	if !s.JetStreamIsStreamCurrent(Account, stream) {
		return fmt.Errorf("server %d: replica of %s is not current", i, stream)
	}
	return nil
}

// Replica is the state of server i's own copy of stream.
func (c *Cluster) Replica(i int, stream string) (server.StreamState, error) {
	s := c.Servers[i]
	if s == nil {
		return server.StreamState{}, fmt.Errorf("server %d is stopped", i)
	}
	d, err := s.JszAccount(&server.JSzOptions{Account: Account, Streams: true})
	if err != nil {
		return server.StreamState{}, fmt.Errorf("server %d: %w", i, err)
	}
	for _, sd := range d.Streams {
		if sd.Name == stream {
			return sd.State, nil
		}
	}
	return server.StreamState{}, fmt.Errorf("server %d has no replica of %s", i, stream)
}

// Eventually polls cond until it returns nil or timeout passes, then
// fails the test with its last error.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() error) {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
