package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawConn is one keep-alive HTTP/1.1 connection that sends GETs and reads
// their answers by hand. net/http's client costs about as much CPU per
// request as the server being measured; on a two-core machine every
// microsecond the load generator spends is taken from the server, so the
// generator does the least HTTP/1.1 allows: one prebuilt request line, a
// status line, Content-Length or chunked framing, the body discarded.
type rawConn struct {
	addr, host string
	// timeout bounds each request from its write to its answer's last
	// byte (0: none), so a server that stops answering fails the run
	// instead of hanging it.
	timeout time.Duration
	conn    net.Conn
	r       *bufio.Reader
	req     []byte
}

// target splits an http:// URL prefix into the address to dial, the Host
// header and the path prefix.
func target(prefix string) (addr, host, path string, err error) {
	u, err := url.Parse(prefix)
	if err != nil {
		return "", "", "", err
	}
	if u.Scheme != "http" {
		return "", "", "", fmt.Errorf("url %q: only http:// is driven", prefix)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return addr, u.Host, u.EscapedPath(), nil
}

func (c *rawConn) dial() error {
	conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return err
	}
	c.conn = conn
	if c.r == nil {
		c.r = bufio.NewReaderSize(conn, 64<<10)
	} else {
		c.r.Reset(conn)
	}
	return nil
}

func (c *rawConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// get requests path and returns the body's length. Any error closes the
// connection; the next get dials again.
func (c *rawConn) get(path string) (int64, error) {
	if c.conn == nil {
		if err := c.dial(); err != nil {
			return 0, err
		}
	}
	c.req = append(c.req[:0], "GET "...)
	c.req = append(c.req, path...)
	c.req = append(c.req, " HTTP/1.1\r\nHost: "...)
	c.req = append(c.req, c.host...)
	c.req = append(c.req, "\r\n\r\n"...)
	n, keep, err := c.roundTrip(path)
	if err != nil || !keep {
		c.close()
	}
	return n, err
}

func (c *rawConn) roundTrip(path string) (n int64, keep bool, err error) {
	if c.timeout > 0 {
		if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
			return 0, false, err
		}
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, false, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("GET %s: bad status line %q", path, line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("GET %s: bad status line %q", path, line)
	}
	length, chunked, keep := int64(-1), false, true
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("GET %s: bad header %q", path, h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return 0, false, fmt.Errorf("GET %s: bad Content-Length %q", path, value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		n, err = c.discardChunked()
	case length >= 0:
		var d int
		d, err = c.r.Discard(int(length))
		n = int64(d)
	default:
		return 0, false, fmt.Errorf("GET %s: answer without length", path)
	}
	if err != nil {
		return n, false, err
	}
	if code != 200 {
		return n, keep, fmt.Errorf("GET %s: status %d", path, code)
	}
	return n, keep, nil
}

func (c *rawConn) discardChunked() (int64, error) {
	var total int64
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return total, err
		}
		size, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseInt(string(size), 16, 64)
		if err != nil || n < 0 {
			return total, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			// trailers end with an empty line
			for {
				t, err := c.r.ReadSlice('\n')
				if err != nil {
					return total, err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return total, nil
				}
			}
		}
		if _, err := c.r.Discard(int(n) + 2); err != nil {
			return total, err
		}
		total += n
	}
}
