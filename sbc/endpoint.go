package sbc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/topology"
)

// endpoint is one realm: its own sipgo user agent (transport and
// transaction layers), server and client, and the sockets of its listeners.
// Keeping realms apart means a message received on the external face is
// answered from it, and a request towards a backend always leaves from the
// internal face.
type endpoint struct {
	name  string
	sbc   *SBC
	msgs  *msgCounters // the realm's message counters
	ua    *sipgo.UserAgent
	srv   *sipgo.Server
	cli   *sipgo.Client
	faces map[string]topology.Face  // by transport ("udp", "tcp")
	laddr map[string]netip.AddrPort // bound address by transport
	udp   []net.PacketConn
	// udpSend are udp's companion send sockets, by index (nil: the
	// listener sends itself; sendsock_linux.go).
	udpSend []*sendSock
	tcp     []net.Listener
	tls     []net.Listener // secureListeners
	wss     []net.Listener // secureListeners
	// out hands the TLS connections the SBC opens towards pool targets to
	// sipgo, which then uses them like accepted ones (tls.go dialTLS).
	out     *connQueue
	peers   *udpPeers // the bound on sipgo's UDP peer entries (udppeers.go); set by serve
	dialMu  sync.Mutex
	dialing map[netip.AddrPort]*sync.Mutex
	cfg     policy.Realm
	wg      sync.WaitGroup
	// sends counts the requests being handed to sipgo; closed refuses new
	// ones. A UDP request from the listener's address finds no socket in
	// sipgo's pool once the listener closed, and sipgo then binds a new
	// one there that nothing closes: close waits for the sends in flight
	// before it closes the sockets (gate, endGate).
	sends  atomic.Int64
	closed atomic.Bool
}

func (s *SBC) newEndpoint(r policy.Realm, pol *policy.Policy) (*endpoint, error) {
	ep := &endpoint{name: r.Name, sbc: s, cfg: r, faces: map[string]topology.Face{}, laddr: map[string]netip.AddrPort{},
		msgs: newMsgCounters(s.metrics, r.Name)}
	// Peers on a connection that send nothing for this long are
	// disconnected (sipgo's default is to wait forever); CRLF keep-alives
	// (RFC 5626) count, and are answered.
	idle := pol.Server.TCPIdleTimeout.Duration
	stream := func() *sip.TransportTCP {
		return &sip.TransportTCP{ReadTimeout: idle, WriteTimeout: 10 * time.Second, DialerCreate: ep.dialer}
	}
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(pol.Server.UserAgent),
		sipgo.WithUserAgenTLSConfig(ep.clientConfig()),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(s.sipLog),
			sip.WithTransportLayerReadFilter(s.tracedFilter(ep)),
			// Several readers per UDP socket, each handling what it read
			// (below), taking turns (udppeers.go): they read alongside
			// when the socket lags, or when one's handler is slow.
			sip.WithTransportLayerUDPReaders(s.udpReaders),
			sip.WithTransportLayerTransports(sip.TransportsConfig{
				TCP: stream(),
				TLS: &sip.TransportTLS{TransportTCP: stream()},
				WSS: &sip.TransportWSS{TransportWS: &sip.TransportWS{ReadTimeout: idle, WriteTimeout: 10 * time.Second}},
			}),
		),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(s.sipLog),
			sip.WithTransactionLayerUnhandledResponseHandler(ep.strayResponse),
			// A datagram is handled in the goroutine that read it, not in
			// a goroutine of its own (third_party/sipgo/README.md): nothing
			// the SBC runs from sipgo may block (detach, start, drain).
			sip.WithTransactionLayerInlineUnreliable()),
	)
	if err != nil {
		return nil, err
	}
	ep.ua = ua
	ep.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.sipLog))
	if err != nil {
		return nil, err
	}
	ep.cli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(s.sipLog))
	if err != nil {
		return nil, err
	}
	for _, l := range r.Listeners {
		t := strings.ToLower(l.Transport)
		if _, dup := ep.faces[t]; !dup {
			ep.faces[t] = topology.Face{Realm: r.Name, Transport: t, Host: l.AdvertiseHost, Port: l.AdvertisePort}
			ep.laddr[t] = l.BindAddr
		}
	}
	s.registerHandlers(ep)
	return ep, nil
}

// listen opens every listener socket of the realm. Errors name the
// listener; nothing is left open on failure.
func (ep *endpoint) listen(pol *policy.Policy) error {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "udp") {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			if pol.Server.UDPReadBuffer > 0 {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, pol.Server.UDPReadBuffer)
			}
			if serr == nil && pol.Server.UDPWriteBuffer > 0 {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, pol.Server.UDPWriteBuffer)
			}
			if serr == nil {
				serr = reusePort(fd) // for the companion that sends (sendsock_linux.go)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	for _, l := range ep.cfg.Listeners {
		t := strings.ToLower(l.Transport)
		switch t {
		case "udp":
			c, err := listenUDP(lc, l.BindAddr)
			if err != nil {
				ep.closeSockets()
				return fmt.Errorf("realm %s: listen udp %s: %w", ep.name, l.BindAddr, err)
			}
			ss, err := openSendSock(c)
			if err != nil {
				ep.sbc.log.Warn("udp listener sends through its own socket", "realm", ep.name, "addr", l.BindAddr.String(), "error", err)
			}
			ep.udp = append(ep.udp, c)
			ep.udpSend = append(ep.udpSend, ss)
			if l.BindAddr.Port() == 0 {
				ep.rebindPort(t, c.LocalAddr())
			}
		case "tcp", "tls", "wss":
			ln, err := lc.Listen(context.Background(), "tcp", l.BindAddr.String())
			if err != nil {
				ep.closeSockets()
				return fmt.Errorf("realm %s: listen %s %s: %w", ep.name, t, l.BindAddr, err)
			}
			var af net.Listener = &acceptFilter{Listener: ln, ep: ep, transport: t}
			switch t {
			case "tcp":
				ep.tcp = append(ep.tcp, af)
			case "tls":
				ep.tls = append(ep.tls, ep.newSecureListener(af, listenerID(ep.name, l)))
				if ep.out == nil {
					ep.out = newConnQueue(ln.Addr())
				}
			case "wss":
				ep.wss = append(ep.wss, ep.newSecureListener(af, listenerID(ep.name, l)))
			}
			if l.BindAddr.Port() == 0 {
				ep.rebindPort(t, ln.Addr())
			}
		default:
			ep.closeSockets()
			return fmt.Errorf("realm %s: transport %q not supported", ep.name, l.Transport)
		}
	}
	return nil
}

// listenUDP opens a UDP listener with lc, whose Control puts it in an
// SO_REUSEPORT group for its companion send socket. The group would let
// another socket of the same user bind the address too (a second SBC, or
// a second listener of this one): a plain bind first makes sure the
// address is free, and fails as it always did when it is not.
func listenUDP(lc net.ListenConfig, addr netip.AddrPort) (net.PacketConn, error) {
	if addr.Port() != 0 {
		probe, err := net.ListenPacket("udp", addr.String())
		if err != nil {
			return nil, err
		}
		probe.Close()
	}
	return lc.ListenPacket(context.Background(), "udp", addr.String())
}

// rebindPort fixes the advertised port of a listener bound to port 0
// (tests).
func (ep *endpoint) rebindPort(t string, a net.Addr) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return
	}
	f := ep.faces[t]
	f.Port = int(ap.Port())
	ep.faces[t] = f
	ep.laddr[t] = ap
}

// serve runs the transport loops until the sockets are closed. A TCP
// Accept error other than closing (EMFILE, ECONNABORTED) does not stop the
// listener: sipgo's loop returns on any error, so it is restarted after a
// short pause.
func (ep *endpoint) serve(ctx context.Context) {
	// UDP: sipgo's read loops, in generations that keep its per-source
	// entries bounded (udppeers.go). Each listener is registered in
	// sipgo's pool before serve returns.
	ep.peers = newUDPPeers(ep, ctx.Done())
	ep.peers.serve(ctx)
	serves := []struct {
		lns   []net.Listener
		serve func(net.Listener) error
	}{{ep.tcp, ep.srv.ServeTCP}, {ep.tls, ep.srv.ServeTLS}, {ep.wss, ep.srv.ServeWSS}}
	for _, sv := range serves {
		for _, ln := range sv.lns {
			ep.serveStream(ctx, ln, sv.serve)
		}
	}
	if ep.out != nil {
		ep.serveStream(ctx, ep.out, ep.srv.ServeTLS)
	}
}

// serveStream runs a connection listener's accept loop, restarted after
// an Accept error other than closing.
func (ep *endpoint) serveStream(ctx context.Context, ln net.Listener, serve func(net.Listener) error) {
	ep.wg.Add(1)
	go func() {
		defer ep.wg.Done()
		for {
			err := serve(ln)
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			ep.sbc.log.Warn("accept loop restarted", "realm", ep.name, "listener", ln.Addr().String(), "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

func (ep *endpoint) closeSockets() {
	for _, c := range ep.udp {
		c.Close()
	}
	for _, ss := range ep.udpSend {
		ss.close()
	}
	for _, ls := range [][]net.Listener{ep.tcp, ep.tls, ep.wss} {
		for _, l := range ls {
			l.Close()
		}
	}
	if ep.out != nil {
		ep.out.Close()
	}
}

func (ep *endpoint) close() {
	ep.endGate()
	ep.closeSockets()
	ep.ua.Close()
	ep.wg.Wait()
}

// face returns what the SBC advertises on this realm for a transport,
// falling back to any listener's face.
func (ep *endpoint) face(transport string) topology.Face {
	t := strings.ToLower(transport)
	if t == "" {
		t = "udp"
	}
	if f, ok := ep.faces[t]; ok {
		return f
	}
	for _, f := range ep.faces {
		return f
	}
	return topology.Face{}
}

// prepare fixes transport, destination and local socket of a request the
// SBC built itself.
func (ep *endpoint) prepare(req *sip.Request, transport string, dst netip.AddrPort) {
	t := strings.ToLower(transport)
	if t == "" {
		t = "udp"
	}
	req.SetTransport(topology.UpperTransport(t))
	req.SetDestination(dst.String())
	if t == "udp" {
		if la, ok := ep.laddr["udp"]; ok {
			req.Laddr = sip.Addr{IP: la.Addr().AsSlice(), Port: int(la.Port())}
		}
	}
}

// noBuild tells sipgo the request is complete: add nothing.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// write sends a request outside any transaction (ACK for 2xx).
func (ep *endpoint) write(req *sip.Request, transport string, dst netip.AddrPort) error {
	ep.prepare(req, transport, dst)
	if !ep.gate() {
		return errRealmClosed
	}
	defer ep.sends.Add(-1)
	return ep.cli.WriteRequest(req, noBuild)
}

// errRealmClosed: a request after the realm's listeners closed.
var errRealmClosed = errors.New("realm closed")

// gate admits a send (counted until the caller decrements sends), unless
// the realm is closing.
func (ep *endpoint) gate() bool {
	ep.sends.Add(1)
	if ep.closed.Load() {
		ep.sends.Add(-1)
		return false
	}
	return true
}

// endGate refuses new sends and waits, bounded, for those in flight: a
// send admitted before closed was set is counted before closed is read.
func (ep *endpoint) endGate() {
	ep.closed.Store(true)
	for deadline := time.Now().Add(2 * time.Second); ep.sends.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// txHandlers receive what a client transaction started by start reports.
// They run in the goroutine that read the response (with inline handling,
// a UDP read loop), or in sipgo's timer or the goroutine that ended the
// transaction: they must never block.
type txHandlers struct {
	// response gets every response the transaction passes up, in order,
	// with no sipgo lock held.
	response func(*sip.Response)
	// end is told the transaction ended (after its final response too, and
	// after Terminate), possibly under the transaction's lock: it may
	// post events but must not call the transaction.
	end func(error)
}

// start starts a client transaction for a request the SBC built, with its
// handlers in place before the request is sent (created, if not nil, sees
// the transaction then too): no goroutine waits on it. If start fails,
// the handlers are not called.
func (ep *endpoint) start(ctx context.Context, req *sip.Request, transport string, dst netip.AddrPort, h txHandlers, created func(*sip.ClientTx)) (*sip.ClientTx, error) {
	ep.prepare(req, transport, dst)
	if strings.EqualFold(transport, "tls") {
		if err := ep.dialTLS(ctx, dst); err != nil {
			return nil, err
		}
	}
	if !ep.gate() {
		return nil, errRealmClosed
	}
	defer ep.sends.Add(-1)
	tx, err := ep.ua.TransactionLayer().NewClientTransaction(ctx, req)
	if err != nil {
		return nil, err
	}
	if h.response != nil {
		tx.OnResponse(h.response)
	}
	var failed atomic.Bool
	if h.end != nil {
		tx.OnTerminate(func(_ string, err error) {
			if !failed.Load() {
				h.end(err)
			}
		})
	}
	if created != nil {
		created(tx)
	}
	if err := tx.Init(); err != nil {
		failed.Store(true)
		tx.Terminate()
		return nil, err
	}
	return tx, nil
}

// dialContext bounds the dial (TCP, TLS) a request may need; over UDP
// there is none and no timer is made.
func dialContext(transport string) (context.Context, context.CancelFunc) {
	if strings.EqualFold(transport, "udp") || transport == "" {
		return context.Background(), func() {}
	}
	return context.WithTimeout(context.Background(), 64*sip.T1)
}

// do runs a non-INVITE transaction to its final response, waiting for it:
// never from a sipgo callback (the response may be read by the goroutine
// that waits). doAsync is the form that does not wait.
func (ep *endpoint) do(ctx context.Context, req *sip.Request, transport string, dst netip.AddrPort) (*sip.Response, error) {
	type result struct {
		res *sip.Response
		err error
	}
	ch := make(chan result, 1)
	var once atomic.Bool
	report := func(r result) {
		if once.CompareAndSwap(false, true) {
			ch <- r
		}
	}
	tx, err := ep.start(ctx, req, transport, dst, txHandlers{
		response: func(res *sip.Response) {
			ep.countResponse(res.StatusCode)
			if !res.IsProvisional() {
				report(result{res: res})
			}
		},
		end: func(err error) {
			if err == nil {
				err = errors.New("transaction ended without response")
			}
			report(result{err: err})
		},
	}, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	select {
	case r := <-ch:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// doAsync runs a non-INVITE transaction and hands its final response, or
// the error that ended it (Timer F bounds it), to done, once, in the
// goroutine that got it: done must not block. Nothing waits for the
// answer. Over a connection (TCP, TLS, WSS) the send may dial or block on
// a write, so it starts in a goroutine of its own; over UDP it starts
// here.
func (ep *endpoint) doAsync(req *sip.Request, transport string, dst netip.AddrPort, done func(*sip.Response, error)) {
	var once atomic.Bool
	fin := func(res *sip.Response, err error) {
		if once.CompareAndSwap(false, true) {
			done(res, err)
		}
	}
	run := func() {
		ctx, cancel := dialContext(transport)
		defer cancel()
		var txp atomic.Pointer[sip.ClientTx]
		_, err := ep.start(ctx, req, transport, dst, txHandlers{
			response: func(res *sip.Response) {
				ep.countResponse(res.StatusCode)
				if res.IsProvisional() {
					return
				}
				fin(res, nil)
				if tx := txp.Load(); tx != nil {
					tx.Terminate() // the answer is in: no need to keep it for Timer K
				}
			},
			end: func(err error) {
				if err == nil {
					err = errors.New("transaction ended without response")
				}
				fin(nil, err)
			},
		}, func(tx *sip.ClientTx) { txp.Store(tx) })
		if err != nil {
			fin(nil, err)
		}
	}
	if strings.EqualFold(transport, "udp") || transport == "" {
		run()
		return
	}
	go run()
}

// detach lets a request handler that runs in a UDP read loop return before
// the request is answered: sipgo then leaves the server transaction to the
// SBC, which ends it once the final response is out (endDetached). Over a
// connection the handler runs in a goroutine of its own and waits as
// before. It reports whether the transaction was detached.
func (ep *endpoint) detach(req *sip.Request, tx sip.ServerTransaction) bool {
	if sip.IsReliable(req.Transport()) {
		return false
	}
	st, ok := tx.(*sip.ServerTx)
	if !ok {
		return false
	}
	st.Detach()
	return true
}

// endDetached does for a detached transaction, once its final response
// was sent (or will never be), what sipgo does when a handler returns;
// a BYE's transaction ends at once (its tomb answers retransmissions).
func endDetached(tx sip.ServerTransaction) {
	st, ok := tx.(*sip.ServerTx)
	if !ok || !st.Detached() {
		return
	}
	if st.Origin().Method == sip.BYE {
		st.Terminate()
		return
	}
	st.TerminateGracefully()
}

// mayBlock reports whether sending on tx's request's transport may block
// (a write on a connection); unknown transactions are assumed to.
func mayBlock(tx sip.ServerTransaction) bool {
	st, ok := tx.(*sip.ServerTx)
	return !ok || sip.IsReliable(st.Origin().Transport())
}

// acceptFilter wraps a TCP (or TLS, WSS) listener so connections from
// unknown sources (the gate, gate.go), blocked sources, sources over
// their packet budget and sources holding too many connections are closed
// before anything reads a byte from them.
type acceptFilter struct {
	net.Listener
	ep        *endpoint
	transport string
}

func (a *acceptFilter) Accept() (net.Conn, error) {
	s := a.ep.sbc
	for {
		c, err := a.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return c, nil
		}
		src := ap.Addr().Unmap()
		ap = netip.AddrPortFrom(src, ap.Port())
		if r, charge := s.unknown(s.state.Load(), a.ep, src, a.transport); r != "" {
			v := silent(stageAccept, r)
			switch {
			case s.def.blocklist.Blocked(src):
				v = silent(stageAccept, reasonBlocked)
			case charge:
				v = v.charge(failUnknownSource)
			}
			s.act(a.ep, peer{src: ap}, nil, nil, v)
			c.Close()
			continue
		}
		if r := s.preParse(a.ep, src); r != "" {
			s.act(nil, peer{src: ap}, nil, nil, silent(stageAccept, r))
			c.Close()
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAlive(true)
		}
		st := s.state.Load()
		cc, r := s.conns.admit(c, a.ep, a.transport, ap, st)
		if r != "" {
			s.act(a.ep, peer{src: ap}, nil, nil, silent(stageAccept, r))
			c.Close()
			continue
		}
		if a.transport == "tcp" {
			// Framed and checked message by message (stream.go); TLS
			// connections are, after the handshake (secureListener).
			return a.ep.newStreamConn(cc, ap), nil
		}
		return cc, nil
	}
}

// connUp reports whether the transport layer holds an open connection to
// addr (a TCP peer's connection, reused for requests towards it).
func (ep *endpoint) connUp(network string, addr netip.AddrPort) bool {
	c, err := ep.ua.TransportLayer().GetConnection(network, addr.String())
	if err != nil || c == nil {
		return false
	}
	c.TryClose() // drop the reference Get took
	return true
}

func init() {
	// sipgo refuses to send a UDP message over 1300 bytes. A request that
	// large goes to the backends over TCP where the pool allows it
	// (tcp_for_large), but responses must go back over the transport the
	// request came on, and a UDP-only carrier must get its 200 OK even if
	// the network fragments it (RFC 3261 18.2.2): lift the limit to what
	// a UDP datagram can carry.
	sip.UDPMTUSize = 65507 + 200
	// An INVITE client transaction that passed a 2xx up stays "Accepted"
	// for Timer M (64*T1) only to pass retransmissions of the 2xx (and
	// other forks' 2xx) to the TU; sipgo keeps the INVITE and the 2xx for
	// that long. (v1.7.3 kept them even after Terminate, as it did not
	// stop timer_m, nor timer_l below: the fork in third_party/sipgo stops
	// both, so the SBC's Terminate at the call's confirmation frees them
	// at once. The short timers stay for the transactions the SBC has not
	// ended yet, e.g. a 2xx whose ACK is late: nothing needs them.) The
	// SBC takes a 2xx that matches no transaction itself
	// (retransmitted2xx, from the stray-response hook): the call, or its
	// tomb, ACKs it. So the accepted state need not outlive a round trip.
	sip.Timer_M = sip.T1
	// Likewise an INVITE server transaction that sent a 2xx stays
	// "Accepted" for Timer L (64*T1), holding the parsed INVITE and the
	// 2xx, only to absorb retransmissions of the INVITE and pass on the
	// TU's retransmissions of the 2xx. The SBC retransmits its 2xx by the
	// transport layer (actRespondA) and recognises a retransmitted INVITE
	// by its Call-ID (callTable.isALeg): a round trip is enough for the
	// transaction to catch the INVITE retransmissions already in flight.
	sip.Timer_L = sip.T1
}
