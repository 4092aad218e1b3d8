// Package natsembed runs the NATS server with JetStream inside the ferry
// process, for the one-machine setup and for tests.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats-server/v2/server"
)

// Config of the embedded server.
type Config struct {
	// Dir holds JetStream's file storage.
	Dir string
	// Listen is the client address, host:port; port 0 or -1 picks a free one.
	Listen string
	// SyncInterval is how often JetStream fsyncs; 0 keeps the server's
	// default (2 minutes). "always" durability is SyncAlways.
	SyncInterval time.Duration
	SyncAlways   bool
	// MaxPayload bounds a message; 0 keeps the default (1 MiB).
	MaxPayload int32
	// Auth, when set, requires the users of Credentials (see Roles) and
	// sets up the publish account; nil lets anyone in (tests only).
	Auth *Credentials
	// Prefix is ferry's subject prefix, for the publish user's permissions
	// (default jetlog.DefaultPrefix).
	Prefix string
}

// Start starts the server and waits until it accepts clients.
func Start(c Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen %q: %w", c.Listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if err := portFree(c.Listen); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:   "ferry",
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     c.Dir,
		NoSigs:       true,
		NoLog:        true,
		SyncInterval: c.SyncInterval,
		SyncAlways:   c.SyncAlways,
		MaxPayload:   c.MaxPayload,
	}
	prefix := c.Prefix
	if prefix == "" {
		prefix = jetlog.DefaultPrefix
	}
	if c.Auth != nil {
		authOptions(opts, c.Auth, prefix)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server on %s not ready", c.Listen)
	}
	if c.Auth != nil {
		if err := wireAccounts(s, prefix); err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("nats accounts: %w", err)
		}
	}
	return s, nil
}

// WriteErr is why the server's JetStream cannot store messages until it is
// reopened, or nil. A file store that failed a write (ENOSPC on a full
// disk) keeps the error and fails every later write of its stream without
// answering the publisher, however much space is freed since; the server
// also turns JetStream off after some failures (a permission error).
func WriteErr(s *server.Server) error {
	if !s.JetStreamEnabled() {
		return errors.New("JetStream is disabled")
	}
	h := s.Healthz(&server.HealthzOptions{Details: true})
	for _, e := range h.Errors {
		if e.Type == server.HealthzErrorStream && strings.Contains(e.Error, "write error") {
			return errors.New(e.Error)
		}
	}
	return nil
}

// Reopen restarts the JetStream of s started with c: every stream is
// closed and recovered from its files, which clears a kept write error.
// Clients stay connected; requests in flight while it runs fail or time
// out. Messages acknowledged before are on disk and recovered.
func Reopen(s *server.Server, c Config) error {
	if err := s.ShutdownJetStream(); err != nil {
		return fmt.Errorf("stop JetStream: %w", err)
	}
	// The limits are derived again, as at start: 75% of the disk space
	// free now plus what the streams hold.
	err := s.EnableJetStream(&server.JetStreamConfig{StoreDir: c.Dir, SyncInterval: c.SyncInterval, SyncAlways: c.SyncAlways})
	if err != nil {
		return fmt.Errorf("start JetStream: %w", err)
	}
	return nil
}

// portFree says so when listen's port is taken: the server itself only
// logs its failure to listen (logging is off) and never becomes ready, so
// without this check a busy port would read as "not ready".
func portFree(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("nats listen %s: address already in use (another ferry serve or NATS server?)", listen)
	}
	if err != nil {
		return fmt.Errorf("nats listen %s: %w", listen, err)
	}
	return ln.Close()
}
