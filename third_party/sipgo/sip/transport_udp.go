package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

var (
	UDPMTUSize = 1500

	ErrUDPMTUCongestion = errors.New("size of packet larger than MTU")
)

// UDP transport implementation
type TransportUDP struct {
	// listener *net.UDPConn
	parser          *Parser
	pool            *ConnectionPool
	log             *slog.Logger
	connectionReuse bool
	readFilter      TransportReadFilter
	// readers is the number of goroutines reading each socket
	// (WithTransportLayerUDPReaders); below 1 means 1.
	readers int
}

func (t *TransportUDP) init(par *Parser) {
	t.parser = par
	t.pool = newConnectionPool()
	if t.log == nil {
		t.log = DefaultLogger()
	}
}

func (t *TransportUDP) String() string {
	return "transport<UDP>"
}

func (t *TransportUDP) Network() string {
	return "UDP"
}

func (t *TransportUDP) Close() error {
	return t.pool.Clear()
	// Closing listeners is caller thing.
}

// ServeConn is direct way to provide conn on which this worker will listen
func (t *TransportUDP) Serve(conn net.PacketConn, handler MessageHandler) error {
	t.log.Debug("begin listening", "network", t.Network(), "addr", conn.LocalAddr().String())
	/*
		Multiple readers makes problem, which can delay writing response
	*/
	c := &UDPConnection{
		PacketConn: conn,
		PacketAddr: conn.LocalAddr().String(),
		Listener:   true,
	}

	t.pool.Add(c.PacketAddr, c)
	t.readListenerConnection(c, c.PacketAddr, handler)
	return nil
}

func (t *TransportUDP) ResolveAddr(addr string) (net.Addr, error) {
	return net.ResolveUDPAddr("udp", addr)
}

// GetConnection will return same listener connection
func (t *TransportUDP) GetConnection(addr string) Connection {
	// Single udp connection as listener can only be used as long IP of a packet in same network
	// In case this is not the case we should return error?
	// https://dadrian.io/blog/posts/udp-in-go/
	// Pool consists either of every new packet From addr or client created connection
	return t.pool.Get(addr)
}

// CreateConnection will create new connection
func (t *TransportUDP) CreateConnection(ctx context.Context, laddr Addr, raddr Addr, handler MessageHandler) (Connection, error) {
	return t.createConnection(ctx, laddr, raddr, handler)
}

func (t *TransportUDP) createConnection(ctx context.Context, laddr Addr, raddr Addr, handler MessageHandler) (Connection, error) {
	laddrStr := laddr.String()
	lc := &net.ListenConfig{}

	protocol := "udp"
	if laddr.IP == nil && raddr.IP.To4() != nil {
		// Use IPV4 if remote is same
		protocol = "udp4"
	}
	addr := raddr.String()

	conn, err := t.pool.addSingleflight(raddr, laddr, t.connectionReuse, func() (Connection, error) {
		udpconn, err := lc.ListenPacket(ctx, protocol, laddrStr)
		if err != nil {
			return nil, err
		}

		c := &UDPConnection{
			PacketConn: udpconn,
			PacketAddr: udpconn.LocalAddr().String(),
			// 1 ref for current return , 2 ref for reader
			refcount: 2 + TransportIdleConnection,
		}
		t.log.Debug("New connection", "raddr", addr)
		go t.readUDPConnection(c, addr, c.PacketAddr, handler)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	c := conn.(*UDPConnection)
	return c, nil
}

func (t *TransportUDP) readUDPConnection(conn *UDPConnection, raddr string, laddr string, handler MessageHandler) {
	defer t.pool.deleteExact(raddr, conn) // should be closed in previous defer
	t.readListenerConnection(conn, laddr, handler)
}

func (t *TransportUDP) readListenerConnection(conn *UDPConnection, laddr string, handler MessageHandler) {
	defer func() {
		if err := t.pool.CloseAndDelete(conn, laddr); err != nil {
			t.log.Warn("connection pool not clean cleanup", "error", err)
		}
	}()
	defer t.log.Debug("Read listener connection stopped", "laddr", laddr)

	// NOTE: consider to refactor, but for cleanup
	// We are reusing UDP listener as dial connection
	// Each reader keeps the addresses it added to the pool; they are
	// deleted once every reader of the socket stopped.
	readers := max(t.readers, 1)
	accepted := make([]map[string]struct{}, readers)
	var wg sync.WaitGroup
	for i := 1; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			accepted[i] = t.readLoop(conn, laddr, handler)
		}()
	}
	accepted[0] = t.readLoop(conn, laddr, handler)
	wg.Wait()

	addrs := make([]string, 0, len(accepted[0]))
	for _, m := range accepted {
		for addr := range m {
			addrs = append(addrs, addr)
		}
	}
	t.pool.deleteExactN(addrs, conn)
}

// srcCache is the string of the last source address a read loop saw:
// consecutive datagrams from one peer (most of them, on a trunk) reuse it
// instead of formatting it again (three allocations for a *net.UDPAddr).
type srcCache struct {
	ap  netip.AddrPort
	s   string
	set bool
}

func (c *srcCache) str(a net.Addr) string {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return a.String()
	}
	ap := u.AddrPort()
	if !ap.Addr().IsValid() || int(ap.Port()) != u.Port {
		return u.String() // not a key that tells addresses apart
	}
	if c.set && ap == c.ap {
		return c.s
	}
	c.ap, c.s, c.set = ap, u.String(), true
	return c.s
}

// PacketReaders is what a PacketConn given to ServeUDP may implement to
// give each of the socket's read loops a reader of its own: one that
// keeps state between reads, such as datagrams it read several at a time
// (recvmmsg) and hands out one by one (fork change 37).
type PacketReaders interface {
	// PacketReader returns a new reader; one read loop uses it, from
	// one goroutine, and closes it when the loop ends if it is an
	// io.Closer.
	PacketReader() PacketReader
}

// PacketReader is one read loop's reader of a UDP socket.
type PacketReader interface {
	ReadFrom(b []byte) (n int, addr net.Addr, err error)
}

// FilteringPacketReader is a PacketReader that applies the transport's
// read filter itself (fork change 38), e.g. to every datagram of a batch
// as soon as it is read, before handing out the first: the loop gives it
// the filter once, before its first read, and does not filter what it
// returns. A datagram the filter drops is never returned; an error of the
// filter is returned by ReadFrom, which ends the loop as the filter's
// error would.
type FilteringPacketReader interface {
	PacketReader
	// UseReadFilter sets the filter and the properties of this socket
	// (Transport, LocalAddr; RemoteAddr is each datagram's source).
	UseReadFilter(f TransportReadFilter, props TransportReadProps)
}

// readLoop reads the socket until it is closed or fails, and returns the
// source addresses it added to the pool.
func (t *TransportUDP) readLoop(conn *UDPConnection, laddr string, handler MessageHandler) map[string]struct{} {
	buf := make([]byte, TransportBufferReadSize)
	var lastRaddr string
	var last srcCache
	acceptedAddr := make(map[string]struct{})
	var rd PacketReader = conn
	filter := t.readFilter
	if rs, ok := conn.PacketConn.(PacketReaders); ok {
		pr := rs.PacketReader()
		if c, ok := pr.(io.Closer); ok {
			defer c.Close() // the loop ends, whichever way: the reader lets go of what it holds
		}
		if fr, ok := pr.(FilteringPacketReader); ok && filter != nil {
			fr.UseReadFilter(filter, TransportReadProps{Transport: t.Network(), LocalAddr: conn.LocalAddr()})
			filter = nil
		}
		rd = readerDebug{pr, conn}
	}
	for {
		num, raddr, err := rd.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				t.log.Debug("Read connection closed", "laddr", laddr, "error", err)
				return acceptedAddr
			}
			// Windows reports an error when a datagram exceeds the read buffer.
			if isRecvMsgSizeErr(err) {
				continue
			}
			t.log.Error("Read connection error", "laddr", laddr, "error", err)
			return acceptedAddr
		}

		data := buf[:num]
		if len(bytes.Trim(data, "\x00")) == 0 {
			continue
		}
		rastr := last.str(raddr)
		if filter != nil {
			filtered, err := filter(TransportReadProps{
				Transport:  t.Network(),
				LocalAddr:  conn.LocalAddr(),
				RemoteAddr: raddr,
			}, data)
			if err != nil {
				t.log.Error("Read filter error", "laddr", laddr, "raddr", rastr, "error", err)
				return acceptedAddr
			}
			if len(filtered) == 0 {
				continue
			}
			data = filtered
		}

		if lastRaddr != rastr {
			// In most cases we are in single connection mode so no need to keep adding in pool
			// In case of server and multiple UDP listeners, this makes sure right one is used
			t.pool.Add(rastr, conn)
			acceptedAddr[rastr] = struct{}{}
		}

		t.parseAndHandle(data, rastr, handler)
		lastRaddr = rastr
	}
}

// This should performe better to avoid any interface allocation
// For now no usage, but leaving here
/* func (t *transportUDP) readUDPConn(conn *net.UDPConn, handler MessageHandler) {
	buf := make([]byte, transportBufferSize)
	defer conn.Close()

	for {
		//ReadFromUDP should make one less allocation
		num, raddr, err := conn.ReadFromUDP(buf)

		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				t.log.Debug().Err(err).Msg("Read connection closed")
				return
			}
			t.log.Error().Err(err).Msg("Read UDP connection error")
			return
		}

		data := buf[:num]
		if len(bytes.Trim(data, "\x00")) == 0 {
			continue
		}

		t.parseAndHandle(data, raddr.String(), handler)
	}
} */

func (t *TransportUDP) parseAndHandle(data []byte, src string, handler MessageHandler) {
	// Check is keep alive
	if len(data) <= 4 {
		//One or 2 CRLF
		if len(bytes.Trim(data, "\r\n")) == 0 {
			t.log.Debug("Keep alive CRLF received")
			return
		}
	}

	msg, err := t.parser.ParseSIP(data) //Very expensive operation
	if err != nil {
		t.log.Error("failed to parse", "data", string(data), "error", err)
		return
	}

	msg.SetTransport(t.Network())
	// Current transaction are taking connection but for UDP they can forward on different src address
	msg.SetSource(src) // By default we expect our source is behind NAT. https://datatracker.ietf.org/doc/html/rfc3581#section-6
	handler(msg)
}

type UDPConnection struct {
	PacketConn net.PacketConn
	PacketAddr string // For faster matching
	Listener   bool

	mu       sync.RWMutex
	refcount int
}

func (c *UDPConnection) close() error {
	c.mu.Lock()
	c.refcount = 0
	c.mu.Unlock()

	if c.Listener {
		// In case this UDP created as listener from Serve. Avoid double closing.
		// Closing is done by read connection and it will return already error
		return nil
	}
	DefaultLogger().Debug("UDP reference doing hard close", "ip", c.LocalAddr().String(), "ref", 0)
	return c.PacketConn.Close()
}

func (c *UDPConnection) LocalAddr() net.Addr {
	return c.PacketConn.LocalAddr()
}

func (c *UDPConnection) Ref(i int) int {
	c.mu.Lock()
	c.refcount += i
	ref := c.refcount
	c.mu.Unlock()
	return ref
}

func (c *UDPConnection) Close() error {
	return c.close()
}

func (c *UDPConnection) TryClose() (int, error) {
	c.mu.Lock()
	c.refcount--
	ref := c.refcount
	c.mu.Unlock()

	if c.Listener {
		// Listeners must be closed manually or by forcing error
		return ref, nil
	}

	DefaultLogger().Debug("UDP reference decrement", "src", c.LocalAddr().String(), "ref", ref)
	if ref > 0 {
		return ref, nil
	}

	if ref < 0 {
		DefaultLogger().Warn("UDP ref went negative on try close", "src", c.LocalAddr().String(), "ref", ref)
		return 0, nil
	}

	return ref, c.close()
}

// readerDebug is a PacketReader of conn's socket with conn's debug hook.
type readerDebug struct {
	PacketReader
	conn *UDPConnection
}

func (r readerDebug) ReadFrom(b []byte) (n int, addr net.Addr, err error) {
	n, addr, err = r.PacketReader.ReadFrom(b)
	if SIPDebug && err == nil {
		logSIPRead("UDP", r.conn.PacketConn.LocalAddr().String(), addr.String(), b[:n])
	}
	return n, addr, err
}

func (c *UDPConnection) ReadFrom(b []byte) (n int, addr net.Addr, err error) {
	// Some debug hook. TODO move to proper way
	n, addr, err = c.PacketConn.ReadFrom(b)
	if SIPDebug && err == nil {
		logSIPRead("UDP", c.PacketConn.LocalAddr().String(), addr.String(), b[:n])
	}
	return n, addr, err
}

func (c *UDPConnection) WriteTo(b []byte, addr net.Addr) (n int, err error) {
	// Some debug hook. TODO move to proper way
	n, err = c.PacketConn.WriteTo(b, addr)
	if SIPDebug && err == nil {
		logSIPWrite("UDP", c.PacketConn.LocalAddr().String(), addr.String(), b[:n])
	}
	return n, err
}

func (c *UDPConnection) WriteMsg(msg Message) error {
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	data := wireOf(msg, buf)

	if len(data) > UDPMTUSize-200 {
		return ErrUDPMTUCongestion
	}

	var n int
	var err error

	a := msg.remoteAddress() // Destination should be already resolved by transport layer
	if a.IP == nil {
		// Do fallback
		host, port, err := ParseAddr(msg.Destination())
		if err != nil {
			return err
		}
		a.IP = net.ParseIP(host)
		a.Port = port
	}

	raddr := net.UDPAddr{
		IP:   a.IP,
		Port: a.Port,
		Zone: a.Zone,
	}
	if raddr.Port == 0 {
		raddr.Port = DefaultUdpPort
	}

	n, err = c.WriteTo(data, &raddr)
	if err != nil {
		return fmt.Errorf("udp conn %s err. %w", c.PacketConn.LocalAddr().String(), err)
	}

	if n == 0 {
		return fmt.Errorf("wrote 0 bytes")
	}

	if n != len(data) {
		return fmt.Errorf("fail to write full message")
	}
	return nil
}
