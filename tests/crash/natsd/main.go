//go:build crash

// Command natsd runs a standalone NATS server with JetStream for the crash
// tests: the test kills it with SIGKILL and starts it again on the same
// store and port, under a running ferry serve --nats.
//
//	natsd -listen 127.0.0.1:4333 -store /tmp/js
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4222", "client listen address (loopback only)")
	store := flag.String("store", "", "JetStream store directory")
	flag.Parse()
	if err := run(*listen, *store); err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
}

func run(listen, store string) error {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("listen %q: only 127.0.0.1", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 {
		return fmt.Errorf("listen %q: want a fixed port", listen)
	}
	if store == "" {
		return fmt.Errorf("-store is required")
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "crash-natsd",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   store,
		NoSigs:     true,
	})
	if err != nil {
		return err
	}
	s.ConfigureLogger()
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("not ready for connections on %s", listen)
	}
	fmt.Printf("natsd ready on nats://%s store %s\n", listen, store)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
