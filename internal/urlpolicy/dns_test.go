package urlpolicy

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// dnsServer is a tiny DNS server on 127.0.0.1 that answers every A query
// with the address it is set to, and AAAA queries with nothing: enough
// for Go's resolver, so that a test can say what a name resolves to, and
// change it between two dials.
type dnsServer struct {
	conn    net.PacketConn
	mu      sync.Mutex
	answer  netip.Addr
	queries atomic.Int32
}

func startDNS(t *testing.T, answer netip.Addr) *dnsServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn, answer: answer}
	t.Cleanup(func() { conn.Close() })
	go s.serve()
	return s
}

func (s *dnsServer) set(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = a
}

// resolver asks only this server.
func (s *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.conn.LocalAddr().String())
	}}
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if reply := s.reply(buf[:n]); reply != nil {
			s.conn.WriteTo(reply, from)
		}
	}
}

// reply answers a query of one question: its id and question echoed, and
// an A record for an A query.
func (s *dnsServer) reply(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // the root label, type and class
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[end-4:])
	s.queries.Add(1)
	s.mu.Lock()
	a := s.answer
	s.mu.Unlock()
	out := append([]byte(nil), q[:2]...)                  // id
	out = append(out, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0) // response, recursion; 1 question
	out = append(out, q[12:end]...)
	if qtype == 1 && a.Is4() {
		out[7] = 1                          // one answer
		out = append(out, 0xc0, 12)         // the question's name
		out = append(out, 0, 1, 0, 1)       // A, IN
		out = append(out, 0, 0, 0, 0, 0, 4) // TTL 0, 4 bytes
		ip := a.As4()
		out = append(out, ip[:]...)
	}
	return out
}
