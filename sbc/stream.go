package sbc

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sbc-project/sbc/sbc/validate"
)

// Messages on TCP and TLS connections. sipgo reads a connection in
// chunks and its read filter sees chunks, not messages; and it sets the
// read deadline anew before every read, so a peer that sends a byte a
// second keeps a connection (and its goroutine and buffers) for ever.
// streamConn sits between the connection (after TLS) and sipgo, frames
// the stream into messages itself (validate.Frame) and hands sipgo one
// whole, checked message per read:
//
//   - per message, what the read filter does for a datagram: the
//     blocklist (a source blocked since it connected loses the
//     connection: stream/blocked), the packet budget (the message is
//     dropped: stream/source_pps), the raw checks (dropped, charged
//     malformed: validate/…);
//   - a stream that cannot be framed (too large, no or bad
//     Content-Length) is closed: validate/…, charged malformed;
//   - two deadlines that bytes cannot push back: a message must be
//     complete server.tcp_message_timeout after its first byte
//     (stream/message_timeout), and a connection with no complete message
//     for server.tcp_idle_timeout is closed (counted nowhere: idle is not
//     a drop), unless a device registered over it and its binding has
//     not expired (regCache.holdsFlow): the connection is the only way
//     to call the device, so it is kept, idle, while the registration
//     lives, and closed at the first idle timeout after it ends. A CRLF
//     keep-alive (RFC 5626) counts as a message: "\r\n\r\n" is handed to
//     sipgo alone, which answers it.
//
// sipgo's own read deadline is ignored (SetReadDeadline does nothing).
// WebSocket connections carry whole messages: the read filter checks
// them (filter.go), and sipgo's WebSocket reader sets one deadline per
// message, which bytes do not extend.

// streamConn is an accepted TCP or TLS connection as sipgo reads it.
type streamConn struct {
	net.Conn // *countedConn (tcp) or *secureConn (tls)
	s        *SBC
	ep       *endpoint
	src      netip.AddrPort

	buf   []byte    // bytes read and not yet framed
	out   []byte    // a checked message (or keep-alive) not yet handed to sipgo
	start time.Time // when the first byte of the message in buf came (zero: buf is empty)
	last  time.Time // when the last complete message (or the connection) came
	err   error     // the end of the stream, once reached
	ready bool      // the TLS handshake is done (or there is none)
	chunk [4096]byte
}

func (ep *endpoint) newStreamConn(c net.Conn, src netip.AddrPort) *streamConn {
	return &streamConn{Conn: c, s: ep.sbc, ep: ep, src: src, last: time.Now()}
}

// errStreamClosed ends a stream the SBC closed (deadline, block, framing):
// sipgo takes it as the peer's close and logs nothing above debug.
var errStreamClosed = io.EOF

// Read hands sipgo the next checked message (or keep-alive), or as much
// of it as fits in b.
func (c *streamConn) Read(b []byte) (int, error) {
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.next() {
			continue
		}
		if c.err == nil {
			c.fill()
		}
	}
	n := copy(b, c.out)
	c.out = c.out[n:]
	return n, nil
}

// next takes what it can from buf: leading keep-alives, then one whole
// message, checked. It reports whether it took anything (or ended the
// stream).
func (c *streamConn) next() bool {
	s := c.s
	// CRLFs between messages: "\r\n\r\n" is a keep-alive ping (handed to
	// sipgo alone, it answers "\r\n"); a lone CRLF is a pong or an old
	// style keep-alive, taken silently.
	k := 0
	for k < len(c.buf) && (c.buf[k] == '\r' || c.buf[k] == '\n') {
		k++
	}
	if k > 0 {
		if k == len(c.buf) && k < 4 && k%2 == 1 {
			return false // "\r" or "\r\n\r": wait for the rest
		}
		ping := k >= 4
		c.consume(k)
		c.last = time.Now()
		if r := s.preParse(c.ep, c.src.Addr()); r != "" {
			return c.dropMessage(r)
		}
		if ping {
			c.out = append(c.out[:0], "\r\n\r\n"...)
		}
		return true
	}
	if len(c.buf) == 0 {
		return false
	}
	n, r := validate.Frame(c.buf, s.def.valOpt)
	if r != nil {
		s.act(c.ep, s.sourcePeer(c.src), nil, nil, validateVerdict(r))
		c.end()
		return true
	}
	if n == 0 {
		return false
	}
	msg := c.buf[:n]
	c.last = time.Now()
	if r := s.preParse(c.ep, c.src.Addr()); r != "" {
		c.consume(n)
		return c.dropMessage(r)
	}
	if r := validate.Raw(msg, s.def.valOpt); r != nil {
		s.act(c.ep, s.sourcePeer(c.src), nil, nil, validateVerdict(r))
		c.consume(n)
		return true
	}
	c.out = append(c.out[:0], msg...)
	c.consume(n)
	return true
}

// dropMessage counts a message of a blocked or over-budget source: the
// first loses the connection, the second only the message.
func (c *streamConn) dropMessage(r reason) bool {
	c.s.act(c.ep, peer{src: c.src}, nil, nil, silent(stageStream, r))
	if r == reasonBlocked {
		c.end()
	}
	return true
}

// consume removes the first n bytes of buf.
func (c *streamConn) consume(n int) {
	c.buf = c.buf[:copy(c.buf, c.buf[n:])]
	if len(c.buf) == 0 {
		c.start = time.Time{}
	} else {
		c.start = time.Now() // the next message has begun
	}
}

// fill reads more bytes, under the deadline that applies: the message's
// when one has begun, else the idle one.
func (c *streamConn) fill() {
	if sc, ok := c.Conn.(*secureConn); ok && !c.ready {
		// The TLS handshake (under its own deadline) first: the idle
		// time starts after it.
		if err := sc.ready(); err != nil {
			c.err = err
			return
		}
		c.ready, c.last = true, time.Now()
	}
	st := c.s.state.Load()
	var deadline time.Time
	if c.start.IsZero() {
		deadline = c.last.Add(st.pol.Server.TCPIdleTimeout.Duration)
	} else {
		deadline = c.start.Add(st.pol.Server.TCPMessageTimeout.Duration)
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		c.err = err
		return
	}
	n, err := c.Conn.Read(c.chunk[:])
	if n > 0 {
		if len(c.buf) == 0 {
			c.start = time.Now()
		}
		c.buf = append(c.buf, c.chunk[:n]...)
	}
	if err == nil {
		return
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout() && !c.start.IsZero():
		c.s.act(c.ep, peer{src: c.src}, nil, nil, silent(stageStream, reasonMessageTimeout).with("bytes", len(c.buf)))
		c.end()
	case errors.As(err, &ne) && ne.Timeout():
		if c.s.regs.holdsFlow(c.ep.name, c.transport(), c.src, time.Now()) {
			// A registered device's flow: kept while its binding lives.
			c.last = time.Now()
			return
		}
		c.s.log.Debug("idle connection closed", "realm", c.ep.name, "source", c.src.String())
		c.end()
	default:
		c.err = err
	}
}

// transport is the connection's transport as bindings name it.
func (c *streamConn) transport() string {
	if _, ok := c.Conn.(*secureConn); ok {
		return "tls"
	}
	return "tcp"
}

// end closes the connection: sipgo's next read ends the stream.
func (c *streamConn) end() {
	c.err = errStreamClosed
	c.buf, c.out = nil, nil
	_ = c.Conn.Close()
}

// SetReadDeadline ignores sipgo's per-read deadline: streamConn keeps
// its own (fill).
func (c *streamConn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline sets the write deadline only, for the same reason.
func (c *streamConn) SetDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }
