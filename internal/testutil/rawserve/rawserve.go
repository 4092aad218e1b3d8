// Package rawserve runs a TCP server on 127.0.0.1 that answers every
// request with the same bytes, written by hand: a service that is not
// HTTP, or HTTP that net/http would not write. It depends on nothing of
// ferry's, so the tests of any package (piece's own included) can use it.
package rawserve

import (
	"bufio"
	"net"
	"testing"
)

// Start serves reply to every request until the test ends and returns
// the server's http:// URL for the path /x.car. It reads a request's
// header lines before it answers, so the client's request is not cut off.
func Start(tb testing.TB, reply string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answer(c, reply)
		}
	}()
	return "http://" + ln.Addr().String() + "/x.car"
}

func answer(c net.Conn, reply string) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	c.Write([]byte(reply))
}
