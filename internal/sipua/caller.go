package sipua

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// CallerOptions configures a Caller.
type CallerOptions struct {
	// Addr is the local address to bind; default "127.0.0.1:0". Any
	// 127.0.0.0/8 address works on Linux without setup, which lets tests
	// call from "unknown" sources such as 127.0.0.66.
	Addr string
	// Transport is "udp" (default), "tcp" or "tls". Over TCP and TLS the
	// Caller listens on Addr (its Contact) and dials out from Addr's IP
	// and a free port.
	Transport string
	// TLS is the client side of TLS connections the Caller opens (client
	// certificate, roots); with transport "tls" it is also the server
	// side of its listener (Certificates required). Default: TLS 1.2+,
	// system roots.
	TLS *tls.Config
	// User is the user part of From and Contact; default "caller".
	User string
	// MediaIP and MediaPort, if set, are the address put into the SDP the
	// Caller generates (its answers to re-INVITEs, its offers when
	// DialOptions.SDP is nil): a test's own media socket.
	MediaIP   string
	MediaPort int
	// UserAgent is the User-Agent header value; default "sipua-caller".
	UserAgent string
	// ContactAddr, if set, is the host:port put into the Contact instead
	// of the bound address: a device behind NAT that advertises its
	// private address. Requests sent there never reach the Caller.
	ContactAddr string
	// Logger receives sipgo's logs; nil discards them.
	Logger *slog.Logger
	// LogLimit bounds the Received log (the oldest half is dropped when it
	// is full); 0 means 10000, negative stores no messages.
	LogLimit int
	// OnRegister, if set, answers each REGISTER the Caller receives (a
	// registrar playing the PBX that also calls): the response it returns
	// is sent. Nil: REGISTER gets 405.
	OnRegister func(req *sip.Request) *sip.Response
}

// Caller is a UAC playing a carrier: it places calls, answers what the far
// end sends in them, and records everything it receives.
type Caller struct {
	ep        *endpoint
	transport string
	user      string
}

// NewCaller binds a Caller to its local address.
func NewCaller(opts CallerOptions) (*Caller, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.User == "" {
		opts.User = "caller"
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "sipua-caller"
	}
	cfg := epConfig{
		name:       opts.UserAgent,
		user:       opts.User,
		logger:     opts.Logger,
		logLimit:   opts.LogLimit,
		tlsClient:  opts.TLS,
		mediaIP:    opts.MediaIP,
		mediaPort:  opts.MediaPort,
		onRegister: opts.OnRegister,
		contact:    opts.ContactAddr,
	}
	tp := strings.ToUpper(opts.Transport)
	switch tp {
	case "", "UDP":
		tp = "UDP"
		cfg.udp = opts.Addr
	case "TCP":
		cfg.tcp = opts.Addr
	case "TLS":
		if opts.TLS == nil || len(opts.TLS.Certificates) == 0 {
			return nil, errors.New("sipua: transport tls needs TLS with a certificate")
		}
		cfg.tls, cfg.tlsServer = opts.Addr, opts.TLS
	default:
		return nil, fmt.Errorf("sipua: unsupported transport %q", opts.Transport)
	}
	ep, err := newEndpoint(cfg)
	if err != nil {
		return nil, err
	}
	c := &Caller{ep: ep, transport: tp, user: opts.User}
	if err := ep.serve(); err != nil {
		return nil, err
	}
	return c, nil
}

// Addr returns the bound local address ("ip:port").
func (c *Caller) Addr() string {
	switch c.transport {
	case "TCP":
		return c.ep.tcpAddr
	case "TLS":
		return c.ep.tlsAddr
	}
	return c.ep.udpAddr
}

// Close stops the Caller: calls in progress are abandoned without BYE.
func (c *Caller) Close() error { return c.ep.close() }

// Received returns a copy of the log of received messages.
func (c *Caller) Received() []Msg { return c.ep.rec.all() }

// WaitFor returns the first received message (oldest first, waiting for new
// ones) for which f is true, or ctx's error.
func (c *Caller) WaitFor(ctx context.Context, f func(Msg) bool) (Msg, error) {
	return c.ep.rec.waitFor(ctx, f)
}

// targetURI turns "host:port" (with user as the user part) or a full
// "sip:..." URI into a Request-URI.
func (c *Caller) targetURI(target, user string) (sip.Uri, error) {
	var u sip.Uri
	if strings.HasPrefix(target, "sip:") || strings.HasPrefix(target, "sips:") {
		if err := sip.ParseUri(target, &u); err != nil {
			return u, fmt.Errorf("sipua: target %q: %w", target, err)
		}
		return u, nil
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return u, fmt.Errorf("sipua: target %q: %w", target, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return u, fmt.Errorf("sipua: target %q: bad port", target)
	}
	u = sip.Uri{Scheme: "sip", User: user, Host: uriHost(host), Port: p}
	if c.transport == "TCP" || c.transport == "TLS" {
		u.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(c.transport)}}
	}
	return u, nil
}

// newDialog prepares a UAC dialog towards ruri.
func (c *Caller) newDialog(ruri sip.Uri, fromUser string) *dialog {
	d := newDialog(c.ep, randomID(), c.transport)
	d.localTag = newTag()
	d.localURI = sip.Uri{Scheme: "sip", User: fromUser, Host: uriHost(c.ep.host)}
	to := *ruri.Clone()
	to.UriParams, to.Headers = nil, nil
	d.remoteURI = to
	d.remoteTarget = ruri
	return d
}

// Options sends an OPTIONS to target ("host:port" or a SIP URI) and
// returns the final response.
func (c *Caller) Options(ctx context.Context, target string) (*sip.Response, error) {
	ruri, err := c.targetURI(target, "")
	if err != nil {
		return nil, err
	}
	d := c.newDialog(ruri, c.user)
	req := d.build(sip.OPTIONS, 1, nil, []sip.Header{sip.NewHeader("Accept", "application/sdp")})
	return c.ep.do(ctx, req)
}

// Send writes raw bytes to the address to ("ip:port") from the Caller's
// socket, for hand-crafted (malformed, hostile) messages. Over TCP it opens
// a new connection from the Caller's IP for each Send; what comes back on it
// is recorded until the peer closes it or the Caller closes.
func (c *Caller) Send(ctx context.Context, raw []byte, to string) error {
	if c.transport == "UDP" {
		addr, err := net.ResolveUDPAddr("udp", to)
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err = c.ep.udpConn.WriteTo(raw, addr)
		return err
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.ep.host)}}
	conn, err := d.DialContext(ctx, "tcp", to)
	if err != nil {
		return err
	}
	c.ep.mu.Lock()
	if c.ep.isClosed {
		c.ep.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	c.ep.rawConns[conn] = struct{}{}
	c.ep.mu.Unlock()
	started := c.ep.spawn(func() {
		defer func() {
			c.ep.mu.Lock()
			delete(c.ep.rawConns, conn)
			c.ep.mu.Unlock()
			conn.Close()
		}()
		buf := make([]byte, 16<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				c.ep.rec.feed("TCP", conn.LocalAddr(), conn.RemoteAddr(), buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	if !started {
		conn.Close()
		return ErrClosed
	}
	_, err = conn.Write(raw)
	return err
}

// DialOptions shapes the INVITE of Dial.
type DialOptions struct {
	// User is the user part of the Request-URI and To; default "100".
	User string
	// From is the user part of From; default the Caller's User.
	From string
	// SDP is the offer; nil generates one (see SDP).
	SDP []byte
	// DelayedOffer sends the INVITE without SDP; the ACK then carries the
	// answer to the offer in the 2xx (AckSDP, or a generated answer).
	DelayedOffer bool
	// AckSDP is the answer sent in the ACK for a delayed offer.
	AckSDP []byte
	// Headers are added to the INVITE, after the generated ones.
	Headers []sip.Header
	// No100rel leaves out "Supported: 100rel".
	No100rel bool
}

// Call is one call placed by a Caller.
type Call struct {
	d       *dialog
	invite  *sip.Request // copy of the INVITE as sent, for CANCEL
	delayed bool
	ackSDP  []byte

	mu         sync.Mutex
	responses  []*sip.Response
	final      *sip.Response
	err        error
	cancelling bool
	lastRSeq   uint32
	answered   bool            // a delayed offer has been answered (PRACK or ACK)
	seen       map[string]bool // raw responses already listed
	n          notifier
}

// maxCallResponses bounds the responses kept per call.
const maxCallResponses = 1000

// onWire lists a response to our INVITE as it arrives on the wire,
// skipping byte-identical retransmissions.
func (c *Call) onWire(m Msg) {
	if m.CSeqMethod() != "INVITE" || !strings.HasPrefix(m.Header("CSeq"), strconv.FormatUint(uint64(c.invite.CSeq().SeqNo), 10)+" ") {
		return
	}
	msg, err := sip.ParseMessage(m.Raw)
	if err != nil {
		return
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		return
	}
	c.mu.Lock()
	if c.seen[string(m.Raw)] || len(c.responses) >= maxCallResponses {
		c.mu.Unlock()
		return
	}
	c.seen[string(m.Raw)] = true
	c.responses = append(c.responses, res)
	c.mu.Unlock()
	c.n.broadcast()
}

// Dial sends an INVITE to target ("host:port", with opts.User as the user
// part, or a full SIP URI) and returns as soon as it is sent. The call then
// runs on its own: provisional responses are collected (reliable ones are
// PRACKed), a 2xx is ACKed. ctx bounds sending the INVITE only.
func (c *Caller) Dial(ctx context.Context, target string, opts DialOptions) (*Call, error) {
	if opts.User == "" {
		opts.User = "100"
	}
	if opts.From == "" {
		opts.From = c.user
	}
	ruri, err := c.targetURI(target, opts.User)
	if err != nil {
		return nil, err
	}
	d := c.newDialog(ruri, opts.From)
	d.cseq = 1
	var body []byte
	if !opts.DelayedOffer {
		body = opts.SDP
		if body == nil {
			body = d.localSDP(SendRecv)
		}
	}
	hdrs := []sip.Header{sip.NewHeader("Allow", allowMethods)}
	if !opts.No100rel {
		hdrs = append(hdrs, sip.NewHeader("Supported", "100rel"))
	}
	hdrs = append(hdrs, opts.Headers...)
	req := d.build(sip.INVITE, 1, body, hdrs)
	call := &Call{d: d, invite: req.Clone(), delayed: opts.DelayedOffer, ackSDP: opts.AckSDP, seen: map[string]bool{}}
	d.onWire = call.onWire

	c.ep.addDialog(d)
	tx, err := c.ep.transact(ctx, req)
	if err != nil {
		c.ep.removeDialog(d)
		return nil, err
	}
	if !c.ep.spawn(func() { call.run(tx) }) {
		tx.Terminate()
		c.ep.removeDialog(d)
		return nil, ErrClosed
	}
	return call, nil
}

// CallID returns the Call-ID of the call.
func (c *Call) CallID() string { return c.d.callID }

// Tag returns the caller's From tag (for topology-hiding checks).
func (c *Call) Tag() string { return c.d.localTag }

// Responses returns the responses to the INVITE received so far, in wire
// order, byte-identical retransmissions left out. (They are taken from the
// socket, not from sipgo's transaction, which runs each message in its own
// goroutine and would drop a 180 overtaken by the 200.)
func (c *Call) Responses() []*sip.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*sip.Response(nil), c.responses...)
}

// Final returns the final response to the INVITE, or nil before it arrives.
func (c *Call) Final() *sip.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.final
}

// Err returns why the INVITE transaction failed without a final response
// (timeout, transport error, Close), or nil.
func (c *Call) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// WaitFinal waits for the final response to the INVITE.
func (c *Call) WaitFinal(ctx context.Context) (*sip.Response, error) {
	for {
		ch := c.n.wait()
		c.mu.Lock()
		final, err := c.final, c.err
		c.mu.Unlock()
		if final != nil {
			return final, nil
		}
		if err != nil {
			return nil, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// WaitStatus waits for the first response whose status is one of codes. It
// fails if the final response arrives and is not one of them.
func (c *Call) WaitStatus(ctx context.Context, codes ...int) (*sip.Response, error) {
	for {
		ch := c.n.wait()
		c.mu.Lock()
		responses, final, err := c.responses, c.final, c.err
		c.mu.Unlock()
		for _, r := range responses {
			for _, code := range codes {
				if r.StatusCode == code {
					return r, nil
				}
			}
		}
		if final != nil {
			return final, fmt.Errorf("sipua: final %d while waiting for %v", final.StatusCode, codes)
		}
		if err != nil {
			return nil, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ended is closed when the call is over: BYE sent or received, CANCEL
// completed, INVITE rejected or failed.
func (c *Call) Ended() <-chan struct{} { return c.d.done }

// EndedBy says who ended the call: Local (our BYE or CANCEL), Remote (their
// BYE, or a rejection), or "" while it lasts or if the INVITE failed.
func (c *Call) EndedBy() Party { return c.d.whoEnded() }

// ErrFinal is returned by Cancel when the INVITE already has its final
// response.
var ErrFinal = errors.New("sipua: INVITE already has a final response")

// Cancel sends CANCEL for the INVITE (after waiting, as RFC 3261 9.1 says,
// for a provisional response) and waits for the response to the CANCEL;
// the INVITE's final response (normally 487) follows, see WaitFinal. A 2xx
// crossing the CANCEL is ACKed and the call hung up with BYE.
func (c *Call) Cancel(ctx context.Context) error {
	for {
		ch := c.n.wait()
		c.mu.Lock()
		if c.final != nil || c.err != nil {
			c.mu.Unlock()
			return ErrFinal
		}
		if slices.ContainsFunc(c.responses, (*sip.Response).IsProvisional) {
			c.cancelling = true
			c.mu.Unlock()
			break
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	inv := c.invite
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	for _, r := range inv.GetHeaders("Route") {
		req.AppendHeader(sip.HeaderClone(r))
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.AppendHeader(sip.NewHeader("User-Agent", c.d.ep.cfg.name))
	req.SetBody(nil)
	req.SetTransport(c.d.transport)
	c.d.ep.setLaddr(req)
	res, err := c.d.ep.do(ctx, req)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return fmt.Errorf("sipua: CANCEL answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// Bye hangs up an answered call.
func (c *Call) Bye(ctx context.Context) error {
	res, err := c.d.request(ctx, sip.BYE, nil, nil)
	return statusError(res, err)
}

// ReInvite sends a re-INVITE with the given SDP (nil: no offer, the ACK then
// carries an answer) and returns the final response. Use
// SDP(..., SendOnly) to put the far end on hold, SendRecv to resume.
func (c *Call) ReInvite(ctx context.Context, sdp []byte) (*sip.Response, error) {
	return c.d.reinvite(ctx, sdp, nil)
}

// Update sends an UPDATE (RFC 3311) with the given SDP and returns the final
// response.
func (c *Call) Update(ctx context.Context, sdp []byte) (*sip.Response, error) {
	return c.d.request(ctx, sip.UPDATE, sdp, nil)
}

// Info sends an INFO (Content-Type application/dtmf-relay).
func (c *Call) Info(ctx context.Context, body []byte) (*sip.Response, error) {
	return c.d.request(ctx, sip.INFO, body, nil)
}

// Message sends a MESSAGE (Content-Type text/plain).
func (c *Call) Message(ctx context.Context, body []byte) (*sip.Response, error) {
	return c.d.request(ctx, sip.MESSAGE, body, nil)
}

// Refer sends a REFER with Refer-To: <target>.
func (c *Call) Refer(ctx context.Context, target string) (*sip.Response, error) {
	return c.d.request(ctx, sip.REFER, nil, []sip.Header{sip.NewHeader("Refer-To", "<"+target+">")})
}

// Request sends any in-dialog request with the given body and extra
// headers and returns the final response; the Content-Type follows the
// method unless given in hdrs. INVITE behaves as ReInvite.
func (c *Call) Request(ctx context.Context, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	return c.d.request(ctx, method, body, hdrs)
}

// run drives the INVITE client transaction until its final response.
func (c *Call) run(tx sip.ClientTransaction) {
	d := c.d
	for {
		select {
		case res := <-tx.Responses():
			res = res.Clone()
			if res.IsProvisional() {
				c.provisional(res)
				continue
			}
			if res.IsSuccess() {
				c.success(tx, res)
			} else {
				c.mu.Lock()
				c.final = res
				by := Remote
				if c.cancelling {
					by = Local
				}
				c.mu.Unlock()
				c.n.broadcast()
				d.end(by)
			}
			return
		case <-tx.Done():
			c.fail(txError(tx))
			return
		case <-d.ep.closed:
			c.fail(ErrClosed)
			return
		}
	}
}

func (c *Call) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.n.broadcast()
	c.d.end("")
}

func (c *Call) provisional(res *sip.Response) {
	d := c.d
	var rseq uint64
	reliable := res.StatusCode > 100 && hasOption(res, "Require", "100rel")
	if reliable {
		rseq, _ = strconv.ParseUint(headerValue(res, "RSeq"), 10, 32)
		reliable = rseq > 0
	}
	c.mu.Lock()
	if reliable && uint32(rseq) <= c.lastRSeq {
		c.mu.Unlock()
		return // retransmission, already PRACKed
	}
	if reliable {
		c.lastRSeq = uint32(rseq)
	}
	c.mu.Unlock()

	if to := res.To(); to != nil && res.StatusCode > 100 {
		if tag := tagOf(to.Params); tag != "" {
			d.mu.Lock()
			d.remoteTag = tag
			d.mu.Unlock()
			d.updateTarget(res)
		}
	}
	if !reliable {
		return
	}
	var body []byte
	if c.delayed && len(res.Body()) > 0 {
		c.mu.Lock()
		first := !c.answered
		c.answered = true
		c.mu.Unlock()
		if first {
			body = d.answerSDP(res.Body())
		}
	}
	cseq := res.CSeq()
	rack := fmt.Sprintf("%d %d %s", rseq, cseq.SeqNo, cseq.MethodName)
	req := d.build(sip.PRACK, d.nextCSeq(), body, []sip.Header{sip.NewHeader("RAck", rack)})
	d.ep.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
		defer cancel()
		if _, err := d.ep.do(ctx, req); err != nil {
			d.ep.log.Debug("sipua: PRACK failed", "call", d.callID, "error", err)
		}
	})
}

func (c *Call) success(tx sip.ClientTransaction, res *sip.Response) {
	d := c.d
	d.mu.Lock()
	if to := res.To(); to != nil {
		d.remoteTag = tagOf(to.Params)
	}
	rr := res.GetHeaders("Record-Route")
	d.routeSet = d.routeSet[:0]
	for i := len(rr) - 1; i >= 0; i-- {
		d.routeSet = append(d.routeSet, rr[i].Value())
	}
	d.confirmed = true
	d.mu.Unlock()
	d.updateTarget(res)

	var ackBody []byte
	if c.delayed && len(res.Body()) > 0 {
		c.mu.Lock()
		first := !c.answered
		c.answered = true
		c.mu.Unlock()
		if first {
			ackBody = c.ackSDP
			if ackBody == nil {
				ackBody = d.answerSDP(res.Body())
			}
		}
	}
	if err := d.sendAck(tx, d.build(sip.ACK, c.invite.CSeq().SeqNo, ackBody, nil)); err != nil {
		d.ep.log.Debug("sipua: ACK failed", "call", d.callID, "error", err)
	}
	c.mu.Lock()
	c.final = res
	cancelling := c.cancelling
	c.mu.Unlock()
	c.n.broadcast()
	if cancelling {
		// Our CANCEL crossed the 2xx: hang up (RFC 3261 9.1).
		ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
		defer cancel()
		_, _ = d.request(ctx, sip.BYE, nil, nil)
	}
}
