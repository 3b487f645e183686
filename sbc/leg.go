package sbc

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/topology"
)

// leg is one of a call's two dialogs, seen from the SBC: the A-leg with
// the carrier (the SBC is its UAS) and the B-leg with the backend (the SBC
// is its UAC). Everything the SBC sends on a leg is built from this state,
// never copied from the other leg.
type leg struct {
	name      string // "a" or "b"
	ep        *endpoint
	transport string // "udp", "tcp", "tls" or "wss"
	sips      bool   // the peer reached us with a sips: request-URI: our URIs on this leg are sips: too (RFC 3261 12.1.1)
	// flow: the peer is reached only over its flow (a registered device
	// behind NAT, regcall.go): every request goes to peer.
	flow     bool
	placed   bool           // a leg a local transfer placed (transfer.go): its peer speaks for it, whichever side it is on
	peer     netip.AddrPort // the peer's address: A's source, B's target
	callID   string
	localTag string

	localURI   sip.Uri // our identity on this leg (From of our requests)
	localName  string
	remoteURI  sip.Uri // the peer's identity (To of our requests)
	remoteName string

	inviteCSeq uint32 // CSeq number of the dialog-creating INVITE on this leg

	mu         sync.Mutex
	remoteTag  string
	target     sip.Uri   // remote target (peer's Contact)
	routes     []sip.Uri // route set for our requests
	remoteCSeq uint32    // highest CSeq seen from the peer

	cseq atomic.Uint32 // last CSeq number we used on this leg
}

// dest is where a request on this leg goes (RFC 3261 12.2.1.1, 8.1.2):
// over TCP, the connection the peer opened (or we opened to it) while it
// is still up; otherwise the first route, else the remote target, when
// they name an IP address; else the peer's address.
func (l *leg) dest() netip.AddrPort {
	if l.flow {
		return l.peer
	}
	switch l.transport {
	case "wss":
		// A browser cannot be reached but over the connection it
		// opened: its Contact is a *.invalid name (RFC 7118 5.2).
		return l.peer
	case "tcp", "tls":
		if l.ep != nil && l.ep.connUp(l.transport, l.peer) {
			return l.peer
		}
	}
	l.mu.Lock()
	u := l.target
	if len(l.routes) > 0 {
		u = l.routes[0]
	}
	l.mu.Unlock()
	if ap, ok := uriAddr(u); ok {
		return ap
	}
	return l.peer
}

// uriAddr is the address of a SIP URI whose host is an IP literal (port
// 5060 when absent).
func uriAddr(u sip.Uri) (netip.AddrPort, bool) {
	a, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	if err != nil {
		return netip.AddrPort{}, false
	}
	port := u.Port
	if port == 0 {
		port = 5060
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

func (l *leg) face() topology.Face { return l.ep.face(l.transport) }

// uri is a URI of the SBC on this leg: sips: (without a transport
// parameter) when the peer used sips:, else the face's sip: URI.
func (l *leg) uri(user string) sip.Uri {
	u := l.face().URI(user)
	if l.sips {
		u.Scheme = "sips"
		u.UriParams = nil
	}
	return u
}

// contact is the SBC's Contact on this leg.
func (l *leg) contact(user string) *sip.ContactHeader {
	return &sip.ContactHeader{Address: l.uri(user)}
}

func (l *leg) setRemote(tag string, target *sip.ContactHeader, routes []sip.Uri) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tag != "" {
		l.remoteTag = strings.Clone(tag)
	}
	if target != nil {
		l.target = keepURI(&target.Address)
	}
	if routes != nil {
		l.routes = routes
	}
}

// refreshTarget updates the remote target from a target-refresh request or
// its 2xx (RFC 3261 12.2).
func (l *leg) refreshTarget(c *sip.ContactHeader) {
	if c == nil {
		return
	}
	l.mu.Lock()
	l.target = keepURI(&c.Address)
	l.mu.Unlock()
}

// checkCSeq enforces increasing CSeq numbers from the peer (RFC 3261
// 12.2.2): false means the request is out of order (answer 500).
func (l *leg) checkCSeq(n uint32, method sip.RequestMethod) bool {
	if method == sip.ACK || method == sip.CANCEL {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n <= l.remoteCSeq && l.remoteCSeq != 0 {
		return false
	}
	l.remoteCSeq = n
	return true
}

// reqHeaders are the headers newRequest builds, in one allocation (eight
// before). Each params slice has the room it needs and no more: a param
// added later moves it out rather than into its neighbour's.
type reqHeaders struct {
	via  sip.ViaHeader
	mf   sip.MaxForwardsHeader
	from sip.FromHeader
	to   sip.ToHeader
	cid  sip.CallIDHeader
	cseq sip.CSeqHeader
	kv   [4]sip.HeaderKV // Via: branch, rport; From: tag; To: tag
}

// newRequest builds an in-dialog request on this leg. cseq 0 takes the
// next number; ACK passes the number of the INVITE it acknowledges.
func (l *leg) newRequest(method sip.RequestMethod, cseq uint32, ua string) *sip.Request {
	l.mu.Lock()
	target := *l.target.Clone()
	routes := l.routes
	remoteTag := l.remoteTag
	l.mu.Unlock()

	req := sip.NewRequest(method, target)
	hb := &reqHeaders{}
	l.face().FillVia(&hb.via, hb.kv[0:0:2])
	req.AppendHeader(&hb.via)
	for _, r := range routes {
		req.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	hb.mf = sip.MaxForwardsHeader(70)
	req.AppendHeader(&hb.mf)
	hb.from = sip.FromHeader{DisplayName: l.localName, Address: *l.localURI.Clone(), Params: hb.kv[2:2:3]}
	hb.from.Params.Add("tag", l.localTag)
	req.AppendHeader(&hb.from)
	hb.to = sip.ToHeader{DisplayName: l.remoteName, Address: *l.remoteURI.Clone(), Params: hb.kv[3:3:4]}
	if remoteTag != "" {
		hb.to.Params.Add("tag", remoteTag)
	}
	req.AppendHeader(&hb.to)
	hb.cid = sip.CallIDHeader(l.callID)
	req.AppendHeader(&hb.cid)
	if cseq == 0 {
		cseq = l.cseq.Add(1)
	}
	hb.cseq = sip.CSeqHeader{SeqNo: cseq, MethodName: method}
	req.AppendHeader(&hb.cseq)
	if method != sip.ACK && method != sip.CANCEL && method != sip.BYE {
		req.AppendHeader(l.contact(""))
	}
	if ua != "" {
		req.AppendHeader(sip.NewHeader("User-Agent", ua))
	}
	return req
}

// recordRoutes returns the Record-Route URIs of a message, in order, or
// reversed (a UAC's route set is the reverse of the 2xx's Record-Route).
func recordRoutes(m interface{ GetHeaders(string) []sip.Header }, reverse bool) []sip.Uri {
	hs := m.GetHeaders("Record-Route")
	if len(hs) == 0 {
		return []sip.Uri{}
	}
	out := make([]sip.Uri, 0, len(hs))
	for _, h := range hs {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			out = append(out, keepURI(&rr.Address))
		}
	}
	if reverse {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// keepURI copies a URI a dialog keeps beyond the message it came from:
// the values of a parsed message are substrings of its whole header
// section (third_party/sipgo, change 9), which a plain Clone would keep.
func keepURI(u *sip.Uri) sip.Uri { return *u.CloneStrings() }

func tagOf(params sip.HeaderParams) string {
	v, _ := params.Get("tag")
	return v
}

// copyBody puts src's body (and its Content-Type) on dst.
func copyBody(dst, src interface {
	Body() []byte
	ContentType() *sip.ContentTypeHeader
	AppendHeader(sip.Header)
	SetBody([]byte)
}) {
	body := src.Body()
	if len(body) > 0 {
		if ct := src.ContentType(); ct != nil {
			v := sip.ContentTypeHeader(ct.Value())
			dst.AppendHeader(&v)
		}
	}
	dst.SetBody(body)
}

type bodyMsg interface {
	Body() []byte
	ContentType() *sip.ContentTypeHeader
	AppendHeader(sip.Header)
	SetBody([]byte)
}

// relayBody puts src's body on dst: rewritten by the call's media when it
// is SDP (from is the leg src came from; offer tells an SDP offer from an
// answer), as it is otherwise. A body the media cannot take is not
// relayed: the error says why (a stage media reason).
func (c *call) relayBody(from *leg, offer bool, dst, src bodyMsg) error {
	if c.media == nil || len(src.Body()) == 0 {
		copyBody(dst, src)
		return nil
	}
	ct := ""
	if h := src.ContentType(); h != nil {
		ct = h.Value()
	}
	name := "b"
	if from == c.a {
		name = "a"
	}
	b, err := c.media.body(name, offer, ct, src.Body())
	c.closeReplaced()
	if err != nil {
		dst.SetBody(nil)
		var me *mediaError
		if errors.As(err, &me) {
			c.s.drop(stageMedia, me.r)
		}
		c.logf("SDP not relayed", "from", from.name, "offer", offer, "error", err.Error())
		return err
	}
	c.sdpFrom(name, src.Body())
	v := sip.ContentTypeHeader("application/sdp")
	dst.AppendHeader(&v)
	dst.SetBody(b)
	return nil
}

// rewriteRAck maps an RAck header (RFC 3262: "rseq cseq method") from one
// leg's INVITE CSeq to the other's.
func rewriteRAck(v string, cseq uint32) string {
	f := strings.Fields(v)
	if len(f) != 3 {
		return v
	}
	return f[0] + " " + strconv.FormatUint(uint64(cseq), 10) + " " + f[2]
}

func (l *leg) hasRemote() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.remoteTag != ""
}

func (l *leg) getRemoteTag() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.remoteTag
}

func (l *leg) remoteTagIs(tag string) bool { return l.getRemoteTag() == tag }

// fork is the dialog that a 2xx with To tag `tag` created from this leg's
// INVITE (a forking proxy's other answer): same Call-ID and local tag, its
// own remote tag, target and route set.
func (l *leg) fork(tag string, res *sip.Response) *leg {
	d := &leg{
		name: l.name, ep: l.ep, transport: l.transport, peer: l.peer,
		callID: l.callID, localTag: l.localTag,
		localURI: l.localURI, localName: l.localName,
		remoteURI: l.remoteURI, remoteName: l.remoteName,
		inviteCSeq: l.inviteCSeq, remoteTag: strings.Clone(tag), routes: []sip.Uri{}, flow: l.flow,
	}
	l.mu.Lock()
	d.target = l.target
	l.mu.Unlock()
	d.cseq.Store(l.cseq.Load())
	if ct := res.Contact(); ct != nil {
		d.target = keepURI(&ct.Address)
	}
	if rr := recordRoutes(res, true); len(rr) > 0 {
		d.routes = rr
	}
	return d
}
