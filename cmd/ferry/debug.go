package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// serveDebug serves Go's profiles (net/http/pprof) at addr, which must be
// a loopback address: profiles show internals and cost CPU, so they are
// for an operator on the machine, not for the network.
func serveDebug(addr string) (string, error) {
	if err := checkDebugAddr(addr); err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // lives as long as the process
	return ln.Addr().String(), nil
}

func checkDebugAddr(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%w: --debug-addr %q: %v", errUsage, addr, err)
	}
	if !isLoopback(addr) {
		return fmt.Errorf("%w: --debug-addr %s is not a loopback address", errUsage, addr)
	}
	return nil
}
