package topology

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Face is what the SBC shows of itself on one realm and transport: the
// host and port written into Via sent-by and Contact of every message it
// sends there.
type Face struct {
	Realm     string
	Transport string // "udp" or "tcp" (lower case)
	Host      string // advertised host (IP literal or name)
	Port      int    // advertised port
}

// Contact returns a Contact header pointing at this face. user may be empty.
func (f Face) Contact(user string) *sip.ContactHeader {
	c := &sip.ContactHeader{Address: f.URI(user)}
	return c
}

// URI returns sip:user@host:port with a transport parameter for non-UDP.
func (f Face) URI(user string) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: user, Host: f.Host, Port: f.Port}
	if f.Transport != "" && !strings.EqualFold(f.Transport, "udp") {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", strings.ToLower(f.Transport))
	}
	return u
}

// Via returns a new top Via for a request sent from this face, with a fresh
// RFC 3261 branch and rport (RFC 3581) requested.
func (f Face) Via() *sip.ViaHeader {
	v := &sip.ViaHeader{}
	f.FillVia(v, sip.NewParams())
	return v
}

// FillVia sets *v to what Via returns, its params appended to params
// (empty; room for two saves their allocation).
func (f Face) FillVia(v *sip.ViaHeader, params sip.HeaderParams) {
	*v = sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       UpperTransport(f.Transport),
		Host:            f.Host,
		Port:            f.Port,
		Params:          params,
	}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
}

// UpperTransport is strings.ToUpper without an allocation for the
// transports the SBC has.
func UpperTransport(t string) string {
	switch t {
	case "udp":
		return "UDP"
	case "tcp":
		return "TCP"
	case "tls":
		return "TLS"
	case "ws":
		return "WS"
	case "wss":
		return "WSS"
	}
	return strings.ToUpper(t)
}
