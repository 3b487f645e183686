package sipua

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// RegisterOptions is one REGISTER of a Backend playing a phone: it binds
// the backend's own Contact (on Transport) to User@Domain at Registrar,
// answering one digest challenge with Username and Password.
type RegisterOptions struct {
	// Registrar is the "ip:port" the REGISTER is sent to (an SBC).
	Registrar string
	// Transport is "UDP" (default, from the backend's UDP socket) or
	// "TCP" (over a connection the backend opens to Registrar, which
	// sipgo keeps and reads requests from: an INVITE back over it reaches
	// the backend's Answer).
	Transport string
	// User and Domain are the address-of-record; Domain is also the
	// request-URI.
	User, Domain string
	// Expires is the Expires header; negative writes none.
	Expires int
	// Wildcard sends Contact: * (with Expires: 0): remove every binding.
	Wildcard bool
	// CallID is the registration's Call-ID (the same for refreshes);
	// default one per backend and transport.
	CallID string
	// Username and Password answer a 401/407 challenge; without them the
	// challenge is the result.
	Username, Password string
	// Instance, if set, is the Contact's +sip.instance (RFC 5626), with
	// reg-id 1 and Supported: outbound.
	Instance string
}

// Register sends a REGISTER and returns its final response, after
// answering one digest challenge when credentials are given.
func (b *Backend) Register(ctx context.Context, o RegisterOptions) (*sip.Response, error) {
	tr := strings.ToUpper(o.Transport)
	if tr == "" {
		tr = "UDP"
	}
	if tr != "UDP" && tr != "TCP" {
		return nil, fmt.Errorf("sipua: REGISTER over %q", o.Transport)
	}
	if o.CallID == "" {
		o.CallID = "reg-" + tr + "-" + b.ep.host + "-" + b.ep.udpAddr
	}
	req := b.registerRequest(o, tr)
	res, err := b.ep.do(ctx, req)
	if err != nil {
		return nil, err
	}
	if (res.StatusCode != 401 && res.StatusCode != 407) || o.Username == "" {
		return res, nil
	}
	chName, crName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, crName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chName)
	if h == nil {
		return nil, errors.New("sipua: challenge without " + chName)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return nil, fmt.Errorf("sipua: challenge: %w", err)
	}
	req = b.registerRequest(o, tr)
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: req.Recipient.String(),
		Username: o.Username, Password: o.Password, Count: 1})
	if err != nil {
		return nil, err
	}
	req.AppendHeader(sip.NewHeader(crName, cred.String()))
	return b.ep.do(ctx, req)
}

func (b *Backend) registerRequest(o RegisterOptions, tr string) *sip.Request {
	ruri := sip.Uri{Scheme: "sip", Host: o.Domain}
	req := sip.NewRequest(sip.REGISTER, ruri)
	req.SetTransport(tr)
	req.SetDestination(o.Registrar)
	b.ep.setLaddr(req)
	req.AppendHeader(b.ep.via(tr))
	aor := sip.Uri{Scheme: "sip", User: o.User, Host: o.Domain}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", newTag())
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	cid := sip.CallIDHeader(o.CallID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: b.regCSeq.Add(1), MethodName: sip.REGISTER})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	switch {
	case o.Wildcard:
		req.AppendHeader(sip.NewHeader("Contact", "*"))
		o.Expires = 0
	default:
		ct := b.ep.contact(tr)
		if o.Instance != "" {
			ct.Params = sip.NewParams()
			ct.Params.Add("+sip.instance", `"<`+o.Instance+`>"`)
			ct.Params.Add("reg-id", "1")
			req.AppendHeader(sip.NewHeader("Supported", "outbound"))
		}
		req.AppendHeader(ct)
	}
	if o.Expires >= 0 {
		req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(o.Expires)))
	}
	req.AppendHeader(sip.NewHeader("User-Agent", b.ep.cfg.name))
	req.SetBody(nil)
	return req
}
