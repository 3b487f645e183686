package sipua

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Party names a side of a call, seen from the Backend or Caller that owns it.
type Party string

// The two parties of a call.
const (
	Local  Party = "local"  // this Backend or Caller
	Remote Party = "remote" // the peer (the SBC, in integration tests)
)

// NoAnswer as a response code in [Plan.InDialog] means: do not answer the
// request at all.
const NoAnswer = -1

// AnswerThenBye as a response code in [Plan.InDialog] means: answer the
// request 200 and send BYE right after it, as a phone does that accepts a
// transfer's final NOTIFY and hangs up (the two leave back to back).
const AnswerThenBye = -2

// ErrClosed is returned by operations on a closed Backend or Caller.
var ErrClosed = errors.New("sipua: closed")

// ErrNoDialog is returned when a call has no dialog (yet, or any more) in
// which the requested operation makes sense.
var ErrNoDialog = errors.New("sipua: no such dialog")

const allowMethods = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER"

// closeWait bounds how long Close waits for handler goroutines.
const closeWait = 5 * time.Second

// epConfig configures the SIP plumbing shared by Backend and Caller.
type epConfig struct {
	udp, tcp string // addresses to bind; "" = transport not used
	// tls is a TLS address to bind (server side, tlsServer); tlsClient is
	// the configuration of TLS connections the endpoint opens.
	tls                  string
	tlsServer, tlsClient *tls.Config
	name                 string // User-Agent and Server header value
	user                 string // user part of our Contact and From
	contact              string // host:port of our Contact when not the bound address (CallerOptions.ContactAddr)
	mediaIP              string // address put into SDP; "" = the bound IP
	// mediaPort, if set, is the port put into every SDP (a test's own
	// media socket); 0 = a made-up port per dialog.
	mediaPort int
	logger    *slog.Logger
	logLimit  int

	// dropUDP sees every UDP datagram after it was recorded; returning
	// true drops it before the SIP stack.
	dropUDP func(p sip.TransportReadProps, data []byte) bool
	// onInvite handles an INVITE outside any dialog (nil: 603).
	onInvite func(req *sip.Request, tx sip.ServerTransaction)
	// options returns the OPTIONS response code (0: no response).
	options func() int
	// onRequest sees every received request in wire order, before sipgo.
	onRequest func(Msg)
	// onRegister answers a REGISTER (nil: 405).
	onRegister func(*sip.Request) *sip.Response
}

// endpoint is one sipgo user agent bound to fixed local sockets, with the
// in-dialog request handling both roles share.
type endpoint struct {
	cfg  epConfig
	log  *slog.Logger
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	rec  *recorder
	host string // IP (no brackets) put into Via, Contact and SDP

	udpConn net.PacketConn
	tcpLn   net.Listener
	tlsLn   net.Listener
	udpAddr string
	tcpAddr string
	tlsAddr string

	serveWG sync.WaitGroup
	media   atomic.Uint32

	mu       sync.Mutex
	dialogs  map[string]*dialog
	rawConns map[net.Conn]struct{}
	busy     int
	idle     *sync.Cond
	isClosed bool
	closed   chan struct{}
}

// readyConn signals when sipgo starts reading, which is after it registered
// the socket in its connection pool.
type readyConn struct {
	net.PacketConn
	once  sync.Once
	ready chan struct{}
}

func (c *readyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.once.Do(func() { close(c.ready) })
	return c.PacketConn.ReadFrom(b)
}

func newEndpoint(cfg epConfig) (ep *endpoint, err error) {
	log := cfg.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ep = &endpoint{
		cfg:      cfg,
		log:      log,
		rec:      newRecorder(cfg.logLimit),
		dialogs:  make(map[string]*dialog),
		rawConns: make(map[net.Conn]struct{}),
		closed:   make(chan struct{}),
	}
	ep.idle = sync.NewCond(&ep.mu)
	ep.media.Store(uint32(time.Now().UnixNano() % 1000))
	defer func() {
		if err != nil {
			ep.close()
		}
	}()

	if cfg.udp != "" {
		if ep.udpConn, err = net.ListenPacket("udp", cfg.udp); err != nil {
			return nil, fmt.Errorf("sipua: listen udp %s: %w", cfg.udp, err)
		}
		ep.udpAddr = ep.udpConn.LocalAddr().String()
	}
	if cfg.tcp != "" {
		if ep.tcpLn, err = net.Listen("tcp", cfg.tcp); err != nil {
			return nil, fmt.Errorf("sipua: listen tcp %s: %w", cfg.tcp, err)
		}
		ep.tcpAddr = ep.tcpLn.Addr().String()
	}
	if cfg.tls != "" {
		if cfg.tlsServer == nil {
			return nil, errors.New("sipua: a TLS address needs a server TLS config")
		}
		if ep.tlsLn, err = tls.Listen("tcp", cfg.tls, cfg.tlsServer); err != nil {
			return nil, fmt.Errorf("sipua: listen tls %s: %w", cfg.tls, err)
		}
		ep.tlsAddr = ep.tlsLn.Addr().String()
	}
	first := ep.udpAddr
	if first == "" {
		first = ep.tcpAddr
	}
	if first == "" {
		first = ep.tlsAddr
	}
	host, _, _ := net.SplitHostPort(first)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	ep.host = host
	if ep.cfg.mediaIP == "" {
		ep.cfg.mediaIP = host
	}

	filter := func(p sip.TransportReadProps, data []byte) ([]byte, error) {
		for _, m := range ep.rec.feed(p.Transport, p.LocalAddr, p.RemoteAddr, data) {
			// Responses go to their dialog in wire order: sipgo hands
			// each message to its own goroutine and may reorder them.
			if m.Status == 0 {
				if m.Method != "" && cfg.onRequest != nil {
					cfg.onRequest(m)
				}
				continue
			}
			if d := ep.dialog(m.CallID()); d != nil && d.onWire != nil {
				d.onWire(m)
			}
		}
		if p.Transport == "UDP" && cfg.dropUDP != nil && cfg.dropUDP(p, data) {
			return nil, nil
		}
		return data, nil
	}
	tlsClient := cfg.tlsClient
	if tlsClient == nil {
		tlsClient = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	ep.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent(cfg.user),
		sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgenTLSConfig(tlsClient),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(log),
			sip.WithTransportLayerReadFilter(filter),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(log),
			sip.WithTransactionLayerUnhandledResponseHandler(func(*sip.Response) {}),
		),
	)
	if err != nil {
		return nil, err
	}
	if ep.srv, err = sipgo.NewServer(ep.ua, sipgo.WithServerLogger(log)); err != nil {
		return nil, err
	}
	if ep.cli, err = sipgo.NewClient(ep.ua, sipgo.WithClientLogger(log), sipgo.WithClientHostname(host)); err != nil {
		return nil, err
	}
	ep.registerHandlers()
	return ep, nil
}

// serve starts reading the sockets. It is separate from newEndpoint so that
// the owner can store the endpoint before handlers run.
func (ep *endpoint) serve() error {
	if ep.udpConn != nil {
		rc := &readyConn{PacketConn: ep.udpConn, ready: make(chan struct{})}
		errc := make(chan error, 1)
		ep.serveWG.Add(1)
		go func() {
			defer ep.serveWG.Done()
			errc <- ep.srv.ServeUDP(rc)
		}()
		select {
		case <-rc.ready:
		case err := <-errc:
			ep.close()
			return fmt.Errorf("sipua: serve udp: %v", err)
		}
	}
	if ep.tcpLn != nil {
		ep.serveWG.Add(1)
		go func() {
			defer ep.serveWG.Done()
			_ = ep.srv.ServeTCP(ep.tcpLn)
		}()
	}
	if ep.tlsLn != nil {
		ep.serveWG.Add(1)
		go func() {
			defer ep.serveWG.Done()
			_ = ep.srv.ServeTLS(ep.tlsLn)
		}()
	}
	return nil
}

// close stops everything and waits (bounded) for handler goroutines.
func (ep *endpoint) close() error {
	ep.mu.Lock()
	if ep.isClosed {
		ep.mu.Unlock()
		return nil
	}
	ep.isClosed = true
	close(ep.closed)
	raws := make([]net.Conn, 0, len(ep.rawConns))
	for c := range ep.rawConns {
		raws = append(raws, c)
	}
	ep.mu.Unlock()

	for _, c := range raws {
		c.Close()
	}
	if ep.ua != nil {
		ep.ua.Close()
	}
	if ep.udpConn != nil {
		ep.udpConn.Close()
	}
	if ep.tcpLn != nil {
		ep.tcpLn.Close()
	}
	if ep.tlsLn != nil {
		ep.tlsLn.Close()
	}
	ep.serveWG.Wait()

	done := make(chan struct{})
	go func() {
		ep.mu.Lock()
		for ep.busy > 0 {
			ep.idle.Wait()
		}
		ep.mu.Unlock()
		close(done)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return errors.New("sipua: handlers still running after close")
	}
}

// hold registers a running goroutine; it fails once the endpoint is closed.
func (ep *endpoint) hold() bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.isClosed {
		return false
	}
	ep.busy++
	return true
}

func (ep *endpoint) release() {
	ep.mu.Lock()
	ep.busy--
	if ep.busy == 0 {
		ep.idle.Broadcast()
	}
	ep.mu.Unlock()
}

// spawn runs f in a goroutine that Close waits for.
func (ep *endpoint) spawn(f func()) bool {
	if !ep.hold() {
		return false
	}
	go func() {
		defer ep.release()
		f()
	}()
	return true
}

func (ep *endpoint) handle(f sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if !ep.hold() {
			return
		}
		defer ep.release()
		f(req, tx)
	}
}

func (ep *endpoint) registerHandlers() {
	s := ep.srv
	s.OnInvite(ep.handle(ep.onInvite))
	s.OnAck(ep.handle(ep.onAck))
	s.OnBye(ep.handle(ep.onBye))
	s.OnCancel(ep.handle(ep.onStrayCancel))
	s.OnPrack(ep.handle(ep.onPrack))
	s.OnOptions(ep.handle(ep.onOptions))
	if f := ep.cfg.onRegister; f != nil {
		s.OnRegister(ep.handle(func(req *sip.Request, tx sip.ServerTransaction) { _ = tx.Respond(f(req)) }))
	}
	for _, m := range []sip.RequestMethod{sip.UPDATE, sip.INFO, sip.MESSAGE, sip.NOTIFY, sip.REFER} {
		s.OnRequest(m, ep.handle(ep.onInDialog))
	}
	s.OnNoRoute(ep.handle(func(req *sip.Request, tx sip.ServerTransaction) {
		ep.respond(tx, req, 405, nil, sip.NewHeader("Allow", allowMethods))
	}))
}

// --- addresses and headers ---------------------------------------------

func uriHost(ip string) string {
	if strings.Contains(ip, ":") && !strings.HasPrefix(ip, "[") {
		return "[" + ip + "]"
	}
	return ip
}

func (ep *endpoint) hostPort(transport string) (string, int) {
	addr := ep.udpAddr
	switch {
	case transport == "TLS" && ep.tlsAddr != "":
		addr = ep.tlsAddr
	case (transport == "TCP" && ep.tcpAddr != "") || addr == "":
		addr = ep.tcpAddr
	}
	if addr == "" {
		addr = ep.tlsAddr
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return ep.host, port
}

func (ep *endpoint) via(transport string) *sip.ViaHeader {
	host, port := ep.hostPort(transport)
	v := &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       transport,
		Host:            host,
		Port:            port,
		Params:          sip.NewParams(),
	}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	return v
}

func (ep *endpoint) contact(transport string) *sip.ContactHeader {
	host, port := ep.hostPort(transport)
	if ep.cfg.contact != "" {
		h, p, _ := net.SplitHostPort(ep.cfg.contact)
		host = h
		port, _ = strconv.Atoi(p)
	}
	u := sip.Uri{Scheme: "sip", User: ep.cfg.user, Host: uriHost(host), Port: port}
	if transport == "TCP" || transport == "TLS" {
		u.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(transport)}}
	}
	return &sip.ContactHeader{Address: u}
}

// setLaddr makes sipgo send from our bound socket (UDP) or our IP (TCP).
func (ep *endpoint) setLaddr(req *sip.Request) {
	switch {
	case req.Transport() == "UDP" && ep.udpConn != nil:
		a := ep.udpConn.LocalAddr().(*net.UDPAddr)
		req.Laddr = sip.Addr{IP: a.IP, Port: a.Port}
	case req.Transport() == "TCP", req.Transport() == "TLS":
		req.Laddr = sip.Addr{IP: net.ParseIP(ep.host)}
	}
}

func (ep *endpoint) dialogMediaPort() int {
	if ep.cfg.mediaPort != 0 {
		return ep.cfg.mediaPort
	}
	return ep.nextMediaPort()
}

func (ep *endpoint) nextMediaPort() int {
	return 16384 + int(ep.media.Add(1)%8000)*2
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newTag() string { return randomID()[:16] }

// hasOption reports whether a Supported/Require style header lists tag.
func hasOption(m sip.Message, header, tag string) bool {
	names := []string{header}
	if strings.EqualFold(header, "Supported") {
		names = append(names, "k")
	}
	for _, n := range names {
		for _, h := range m.GetHeaders(n) {
			for _, v := range strings.Split(h.Value(), ",") {
				if strings.EqualFold(strings.TrimSpace(v), tag) {
					return true
				}
			}
		}
	}
	return false
}

func headerValue(m sip.Message, name string) string {
	if h := m.GetHeaders(name); len(h) > 0 {
		return strings.TrimSpace(h[0].Value())
	}
	return ""
}

func callIDOf(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// --- sending -----------------------------------------------------------

// noBuild keeps sipgo from adding headers: our requests are complete.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

func (ep *endpoint) transact(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	select {
	case <-ep.closed:
		return nil, ErrClosed
	default:
	}
	return ep.cli.TransactionRequest(ctx, req, noBuild)
}

// do sends a non-INVITE request and waits for its final response.
func (ep *endpoint) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := ep.transact(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	return ep.waitFinal(ctx, tx)
}

// waitFinal returns (a copy of) the final response of tx.
func (ep *endpoint) waitFinal(ctx context.Context, tx sip.ClientTransaction) (*sip.Response, error) {
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res.Clone(), nil
		case <-tx.Done():
			return nil, txError(tx)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ep.closed:
			return nil, ErrClosed
		}
	}
}

func txError(tx sip.Transaction) error {
	if err := tx.Err(); err != nil {
		return err
	}
	return errors.New("sipua: transaction ended without a final response")
}

// write sends a request outside any transaction (ACK for 2xx).
func (ep *endpoint) write(req *sip.Request) error {
	select {
	case <-ep.closed:
		return ErrClosed
	default:
	}
	return ep.cli.WriteRequest(req, noBuild)
}

// response builds a response to req carrying our Server header.
func (ep *endpoint) response(req *sip.Request, code int, body []byte, hdrs ...sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reasonPhrase(code), nil)
	res.AppendHeader(sip.NewHeader("Server", ep.cfg.name))
	hasCT := false
	for _, h := range hdrs {
		if h == nil {
			continue
		}
		res.AppendHeader(h)
		if strings.EqualFold(h.Name(), "Content-Type") {
			hasCT = true
		}
	}
	if len(body) > 0 && !hasCT {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	res.SetBody(body)
	return res
}

func (ep *endpoint) respond(tx sip.ServerTransaction, req *sip.Request, code int, body []byte, hdrs ...sip.Header) {
	if err := tx.Respond(ep.response(req, code, body, hdrs...)); err != nil {
		ep.log.Debug("sipua: respond failed", "code", code, "error", err)
	}
}

// --- dialogs -----------------------------------------------------------

func (ep *endpoint) addDialog(d *dialog) {
	ep.mu.Lock()
	ep.dialogs[d.callID] = d
	ep.mu.Unlock()
}

func (ep *endpoint) removeDialog(d *dialog) {
	ep.mu.Lock()
	if ep.dialogs[d.callID] == d {
		delete(ep.dialogs, d.callID)
	}
	ep.mu.Unlock()
}

func (ep *endpoint) dialog(callID string) *dialog {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.dialogs[callID]
}

// lookup finds the dialog an incoming in-dialog request belongs to, checking
// both tags.
func (ep *endpoint) lookup(req *sip.Request) *dialog {
	d := ep.dialog(callIDOf(req))
	if d == nil || !d.matches(req) {
		return nil
	}
	return d
}

// dialog is one SIP dialog (or early dialog) and the state both roles need
// to send and answer requests in it.
type dialog struct {
	ep        *endpoint
	callID    string
	transport string // "UDP" or "TCP"

	mu           sync.Mutex
	localURI     sip.Uri
	remoteURI    sip.Uri
	localTag     string
	remoteTag    string
	remoteTarget sip.Uri
	routeSet     []string
	cseq         uint32
	mediaPort    int
	sdpVersion   int
	initial      []byte // our SDP of the initial offer/answer exchange, once made
	policy       map[sip.RequestMethod]int
	confirmed    bool
	ended        bool
	endedBy      Party
	ackWait      map[uint32]chan *sip.Request
	prackWait    map[uint32]chan *sip.Request
	onEnd        func(Party)
	onAck        func(*sip.Request)
	onWire       func(Msg) // responses received for this Call-ID, wire order
	done         chan struct{}
}

func newDialog(ep *endpoint, callID, transport string) *dialog {
	return &dialog{
		ep:        ep,
		callID:    callID,
		transport: transport,
		mediaPort: ep.dialogMediaPort(),
		ackWait:   make(map[uint32]chan *sip.Request),
		prackWait: make(map[uint32]chan *sip.Request),
		done:      make(chan struct{}),
	}
}

func tagOf(p sip.HeaderParams) string {
	v, _ := p.Get("tag")
	return v
}

// matches checks the tags of a request received in this dialog.
func (d *dialog) matches(req *sip.Request) bool {
	from, to := req.From(), req.To()
	if from == nil || to == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if tagOf(to.Params) != d.localTag {
		return false
	}
	return d.remoteTag == "" || tagOf(from.Params) == d.remoteTag
}

func (d *dialog) nextCSeq() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cseq++
	return d.cseq
}

func (d *dialog) code(m sip.RequestMethod, def int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.policy[m]; c != 0 {
		return c
	}
	return def
}

// localSDP returns a new version of our session description.
func (d *dialog) localSDP(direction string) []byte {
	d.mu.Lock()
	d.sdpVersion++
	v, port := d.sdpVersion, d.mediaPort
	d.mu.Unlock()
	return SDP(d.ep.cfg.mediaIP, port, v, direction)
}

// answerSDP answers an offer, mirroring its direction.
func (d *dialog) answerSDP(offer []byte) []byte {
	return d.localSDP(answerDirection(offer))
}

// initialSDP is our SDP for the initial INVITE: the answer to its offer, or
// an offer when it had none. It is made once; provisional and final
// responses repeat it.
func (d *dialog) initialSDP(offer []byte) []byte {
	d.mu.Lock()
	s := d.initial
	d.mu.Unlock()
	if s != nil {
		return s
	}
	if len(offer) > 0 {
		s = d.answerSDP(offer)
	} else {
		s = d.localSDP(SendRecv)
	}
	d.mu.Lock()
	if d.initial == nil {
		d.initial = s
	}
	s = d.initial
	d.mu.Unlock()
	return s
}

// updateTarget takes a new remote target from a Contact header.
func (d *dialog) updateTarget(m sip.Message) {
	var c *sip.ContactHeader
	switch m := m.(type) {
	case *sip.Request:
		c = m.Contact()
	case *sip.Response:
		c = m.Contact()
	}
	if c == nil {
		return
	}
	d.mu.Lock()
	d.remoteTarget = *c.Address.Clone()
	d.mu.Unlock()
}

func (d *dialog) isConfirmed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.confirmed && !d.ended
}

func (d *dialog) setConfirmed() {
	d.mu.Lock()
	d.confirmed = true
	d.mu.Unlock()
}

// end finishes the dialog once; by says who ended it ("" for a failure).
func (d *dialog) end(by Party) {
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		return
	}
	d.ended = true
	d.endedBy = by
	close(d.done)
	onEnd := d.onEnd
	d.mu.Unlock()
	d.ep.removeDialog(d)
	if onEnd != nil {
		onEnd(by)
	}
}

func (d *dialog) whoEnded() Party {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.endedBy
}

func defaultContentType(m sip.RequestMethod) string {
	switch m {
	case sip.INVITE, sip.UPDATE, sip.PRACK, sip.ACK:
		return "application/sdp"
	case sip.INFO:
		return "application/dtmf-relay"
	case sip.NOTIFY:
		return "message/sipfrag;version=2.0"
	default:
		return "text/plain"
	}
}

// build makes a request in this dialog with CSeq number seq.
func (d *dialog) build(method sip.RequestMethod, seq uint32, body []byte, hdrs []sip.Header) *sip.Request {
	d.mu.Lock()
	target := *d.remoteTarget.Clone()
	from := &sip.FromHeader{Address: *d.localURI.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", d.localTag)
	to := &sip.ToHeader{Address: *d.remoteURI.Clone(), Params: sip.NewParams()}
	if d.remoteTag != "" {
		to.Params.Add("tag", d.remoteTag)
	}
	routes := append([]string(nil), d.routeSet...)
	d.mu.Unlock()

	req := sip.NewRequest(method, target)
	req.AppendHeader(d.ep.via(d.transport))
	for _, r := range routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(from)
	req.AppendHeader(to)
	cid := sip.CallIDHeader(d.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	switch method {
	case sip.INVITE, sip.ACK, sip.UPDATE, sip.PRACK, sip.REFER, sip.NOTIFY, sip.OPTIONS:
		req.AppendHeader(d.ep.contact(d.transport))
	}
	req.AppendHeader(sip.NewHeader("User-Agent", d.ep.cfg.name))
	has := map[string]bool{}
	for _, h := range hdrs {
		if h == nil {
			continue
		}
		req.AppendHeader(h)
		has[strings.ToLower(h.Name())] = true
	}
	if method == sip.NOTIFY {
		if !has["event"] {
			req.AppendHeader(sip.NewHeader("Event", "refer"))
		}
		if !has["subscription-state"] {
			req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires=60"))
		}
	}
	if len(body) > 0 && !has["content-type"] {
		req.AppendHeader(sip.NewHeader("Content-Type", defaultContentType(method)))
	}
	req.SetBody(body)
	req.SetTransport(d.transport)
	d.ep.setLaddr(req)
	return req
}

// request sends an in-dialog request and waits for its final response.
func (d *dialog) request(ctx context.Context, method sip.RequestMethod, body []byte, hdrs []sip.Header) (*sip.Response, error) {
	switch method {
	case sip.INVITE:
		return d.reinvite(ctx, body, hdrs)
	case sip.ACK, sip.CANCEL:
		return nil, fmt.Errorf("sipua: %s is not sent with Request", method)
	case sip.BYE:
		if !d.isConfirmed() {
			return nil, ErrNoDialog
		}
	default:
		d.mu.Lock()
		ok := d.remoteTag != "" && !d.ended
		d.mu.Unlock()
		if !ok {
			return nil, ErrNoDialog
		}
	}
	req := d.build(method, d.nextCSeq(), body, hdrs)
	res, err := d.ep.do(ctx, req)
	if method == sip.BYE {
		d.end(Local)
	}
	if err != nil {
		return nil, err
	}
	if res.IsSuccess() && method == sip.UPDATE {
		d.updateTarget(res)
	}
	return res, nil
}

// reinvite sends an INVITE in the dialog, ACKs a 2xx (with an answer when
// the re-INVITE carried no offer) and returns the final response.
func (d *dialog) reinvite(ctx context.Context, sdp []byte, hdrs []sip.Header) (*sip.Response, error) {
	if !d.isConfirmed() {
		return nil, ErrNoDialog
	}
	seq := d.nextCSeq()
	req := d.build(sip.INVITE, seq, sdp, hdrs)
	tx, err := d.ep.transact(ctx, req)
	if err != nil {
		return nil, err
	}
	res, err := d.ep.waitFinal(ctx, tx)
	if err != nil {
		tx.Terminate()
		return nil, err
	}
	if res.IsSuccess() {
		d.updateTarget(res)
		var ackBody []byte
		if len(sdp) == 0 && len(res.Body()) > 0 {
			ackBody = d.answerSDP(res.Body())
		}
		if err := d.sendAck(tx, d.build(sip.ACK, seq, ackBody, nil)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// sendAck sends the ACK for a 2xx and repeats it for each retransmitted 2xx.
func (d *dialog) sendAck(tx sip.ClientTransaction, ack *sip.Request) error {
	var mu sync.Mutex
	tmpl := ack.Clone()
	tx.OnRetransmission(func(r *sip.Response) {
		if !r.IsSuccess() {
			return
		}
		mu.Lock()
		again := tmpl.Clone()
		mu.Unlock()
		_ = d.ep.write(again)
	})
	return d.ep.write(ack)
}

var (
	errNoAck     = errors.New("sipua: no ACK for 2xx")
	errNoPrack   = errors.New("sipua: no PRACK for reliable provisional response")
	errCancelled = errors.New("sipua: INVITE cancelled")
)

// send2xx sends a 2xx to an INVITE and retransmits it (UDP) until the ACK
// with CSeq seq arrives. It returns the ACK.
func (d *dialog) send2xx(tx sip.ServerTransaction, res *sip.Response, seq uint32, cancelled <-chan struct{}) (*sip.Request, error) {
	ch := make(chan *sip.Request, 1)
	d.mu.Lock()
	d.ackWait[seq] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.ackWait, seq)
		d.mu.Unlock()
	}()
	if err := tx.Respond(res); err != nil {
		return nil, err
	}
	// A CANCEL handled before our 2xx leaves the transaction completed with
	// 487; the 2xx was then not sent.
	select {
	case <-cancelled:
		return nil, errCancelled
	default:
	}
	return d.retransmitUntil(func() { _ = tx.Respond(res) }, ch, tx.Acks(), cancelled, errNoAck)
}

// sendReliable sends a reliable provisional response with RSeq rseq and
// retransmits it (UDP) until the PRACK arrives. It returns the PRACK.
func (d *dialog) sendReliable(tx sip.ServerTransaction, res *sip.Response, rseq uint32, cancelled <-chan struct{}) (*sip.Request, error) {
	ch := make(chan *sip.Request, 1)
	d.mu.Lock()
	d.prackWait[rseq] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.prackWait, rseq)
		d.mu.Unlock()
	}()
	if err := tx.Respond(res); err != nil {
		return nil, err
	}
	return d.retransmitUntil(func() { _ = tx.Respond(res) }, ch, nil, cancelled, errNoPrack)
}

func (d *dialog) retransmitUntil(resend func(), ch, ch2 <-chan *sip.Request, cancelled <-chan struct{}, timeout error) (*sip.Request, error) {
	interval := sip.T1
	var tick <-chan time.Time
	var t *time.Timer
	if d.transport == "UDP" {
		t = time.NewTimer(interval)
		defer t.Stop()
		tick = t.C
	}
	giveUp := time.NewTimer(64 * sip.T1)
	defer giveUp.Stop()
	for {
		select {
		case r := <-ch:
			return r, nil
		case r := <-ch2:
			return r, nil
		case <-tick:
			resend()
			interval = min(2*interval, sip.T2)
			t.Reset(interval)
		case <-giveUp.C:
			return nil, timeout
		case <-cancelled:
			return nil, errCancelled
		case <-d.done:
			return nil, ErrNoDialog
		case <-d.ep.closed:
			return nil, ErrClosed
		}
	}
}

// --- incoming requests -------------------------------------------------

func (ep *endpoint) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		ep.onReInvite(req, tx)
		return
	}
	if ep.cfg.onInvite != nil {
		ep.cfg.onInvite(req, tx)
		return
	}
	ep.respond(tx, req, 603, nil)
}

func (ep *endpoint) onReInvite(req *sip.Request, tx sip.ServerTransaction) {
	d := ep.lookup(req)
	if d == nil || !d.isConfirmed() {
		ep.respond(tx, req, 481, nil)
		return
	}
	code := d.code(sip.INVITE, 200)
	if code == NoAnswer {
		tx.Terminate()
		return
	}
	if code < 200 || code >= 300 {
		ep.respond(tx, req, code, nil)
		return
	}
	d.updateTarget(req)
	var body []byte
	if offer := req.Body(); len(offer) > 0 {
		body = d.answerSDP(offer)
	} else {
		body = d.localSDP(SendRecv)
	}
	res := ep.response(req, code, body, ep.contact(d.transport))
	ack, err := d.send2xx(tx, res, req.CSeq().SeqNo, nil)
	if err == nil && d.onAck != nil {
		d.onAck(ack)
	}
}

func (ep *endpoint) onAck(req *sip.Request, tx sip.ServerTransaction) {
	d := ep.dialog(callIDOf(req))
	if d == nil || req.CSeq() == nil {
		return
	}
	d.mu.Lock()
	ch := d.ackWait[req.CSeq().SeqNo]
	d.mu.Unlock()
	if ch != nil {
		select {
		case ch <- req:
		default:
		}
	}
}

func (ep *endpoint) onBye(req *sip.Request, tx sip.ServerTransaction) {
	d := ep.lookup(req)
	if d == nil {
		ep.respond(tx, req, 481, nil)
		return
	}
	code := d.code(sip.BYE, 200)
	if code == NoAnswer {
		return
	}
	ep.respond(tx, req, code, nil)
	if code >= 200 && code < 300 {
		d.end(Remote)
	}
}

// onStrayCancel answers a CANCEL that matched no INVITE transaction (the
// matching ones are answered by sipgo's transaction layer).
func (ep *endpoint) onStrayCancel(req *sip.Request, tx sip.ServerTransaction) {
	ep.respond(tx, req, 481, nil)
}

func (ep *endpoint) onPrack(req *sip.Request, tx sip.ServerTransaction) {
	d := ep.lookup(req)
	f := strings.Fields(headerValue(req, "RAck"))
	var rseq uint64
	if len(f) == 3 {
		rseq, _ = strconv.ParseUint(f[0], 10, 32)
	}
	if d == nil || rseq == 0 {
		ep.respond(tx, req, 481, nil)
		return
	}
	d.mu.Lock()
	ch := d.prackWait[uint32(rseq)]
	d.mu.Unlock()
	if ch == nil {
		ep.respond(tx, req, 481, nil)
		return
	}
	ep.respond(tx, req, 200, nil)
	select {
	case ch <- req:
	default:
	}
}

func (ep *endpoint) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	code := 200
	if ep.cfg.options != nil {
		code = ep.cfg.options()
	}
	if code <= 0 {
		return
	}
	ep.respond(tx, req, code, nil,
		sip.NewHeader("Allow", allowMethods),
		sip.NewHeader("Accept", "application/sdp"))
}

// onInDialog answers UPDATE, INFO, MESSAGE, NOTIFY and REFER.
func (ep *endpoint) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	d := ep.lookup(req)
	if d == nil {
		ep.respond(tx, req, 481, nil)
		return
	}
	def := 200
	if req.Method == sip.REFER {
		def = 202
	}
	code := d.code(req.Method, def)
	if code == NoAnswer {
		return
	}
	if code == AnswerThenBye {
		ep.respond(tx, req, 200, nil)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
			defer cancel()
			_, _ = d.request(ctx, sip.BYE, nil, nil)
		}()
		return
	}
	var body []byte
	var hdrs []sip.Header
	if req.Method == sip.UPDATE && code >= 200 && code < 300 {
		if offer := req.Body(); len(offer) > 0 {
			body = d.answerSDP(offer)
		}
		d.updateTarget(req)
		hdrs = append(hdrs, ep.contact(d.transport))
	}
	ep.respond(tx, req, code, body, hdrs...)
}

// --- reason phrases ----------------------------------------------------

var reasons = map[int]string{
	100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
	183: "Session Progress", 200: "OK", 202: "Accepted",
	300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
	400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
	405: "Method Not Allowed", 407: "Proxy Authentication Required",
	408: "Request Timeout", 415: "Unsupported Media Type", 420: "Bad Extension",
	480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
	482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
	486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
	491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
	502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
	600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
}

func reasonPhrase(code int) string {
	if r, ok := reasons[code]; ok {
		return r
	}
	switch code / 100 {
	case 1:
		return "Progress"
	case 2:
		return "OK"
	case 3:
		return "Redirect"
	case 4:
		return "Client Error"
	case 5:
		return "Server Error"
	}
	return "Failure"
}
