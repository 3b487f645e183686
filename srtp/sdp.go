package srtp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// ErrBadSDP wraps every SDP that cannot be parsed even after the tolerant
// pre-pass, or that lacks what anchoring needs.
var ErrBadSDP = errors.New("srtp: bad SDP")

// ErrAnchorMismatch: the anchor does not describe every m= line.
var ErrAnchorMismatch = errors.New("srtp: anchor does not match the SDP's media")

// maxSDPSize bounds what ParseSDP accepts (a WebRTC offer with many
// candidates is a few kB).
const maxSDPSize = 64 << 10

// ParseSDP parses an SDP body. A pre-pass first puts it in shape for what
// broken SIP stacks send (CRLF or LF, trailing white space that pion would
// keep inside values, empty lines, lines out of RFC 4566 order such as a=
// before t= or c= after a= in a media section, a missing s= or t=,
// duplicate single-valued lines, unknown line types), then pion's strict
// parser runs. What still fails, and an SDP without o=, is ErrBadSDP.
func ParseSDP(b []byte) (*sdp.SessionDescription, error) {
	if len(b) > maxSDPSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSDP, len(b))
	}
	fixed := b
	if !wellFormed(b) {
		var err error
		if fixed, err = tolerate(b); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSDP, err)
		}
	}
	fixed, foreign := foreignMLines(fixed)
	s := &sdp.SessionDescription{}
	if err := s.Unmarshal(fixed); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	for _, f := range foreign {
		if f.i < len(s.MediaDescriptions) {
			mn := &s.MediaDescriptions[f.i].MediaName
			if f.media != "" {
				mn.Media = f.media
			}
			if f.proto != "" {
				mn.Protos = strings.Split(f.proto, "/")
			}
		}
	}
	return s, nil
}

// pion/sdp's parser (v3.0.20) accepts only these m= media types and
// transport parts, although RFC 4566 5.14 allows any token: T.38's
// "m=image 5000 udptl t38" (ITU-T T.38 Annex D), or an "rtp/avp" in lower
// case, would fail the whole SDP. Marshal writes whatever the fields hold.
var (
	pionMedia  = []string{"audio", "video", "text", "application", "message"}
	pionProtos = []string{"UDP", "RTP", "AVP", "SAVP", "SAVPF", "TLS", "DTLS", "SCTP", "AVPF", "TCP",
		"MSRP", "BFCP", "UDT", "IX", "MRCPv2", "FEC"}
)

// foreignMLine is an m= line whose media or transport pion refuses: what
// to put back after parsing (empty: that field was accepted).
type foreignMLine struct {
	i            int
	media, proto string
}

// foreignMLines replaces, in the m= lines, the media types and transports
// that pion refuses and that are RFC 4566 tokens by placeholders it
// accepts ("application", "UDP"), and says what to put back. An SDP with
// none is returned as it is, without a copy.
func foreignMLines(b []byte) ([]byte, []foreignMLine) {
	var foreign []foreignMLine
	var out []byte
	i, done := -1, 0
	for rest, at := b, 0; len(rest) > 0; {
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			end = len(rest)
		}
		line := bytes.TrimRight(rest[:end], "\r")
		start := at
		at += min(end+1, len(rest))
		rest = rest[min(end+1, len(rest)):]
		if !bytes.HasPrefix(line, []byte("m=")) {
			continue
		}
		i++
		f := strings.Fields(string(line[2:]))
		if len(f) < 3 {
			continue // pion says what is wrong
		}
		fm := foreignMLine{i: i}
		if !slices.Contains(pionMedia, f[0]) && isToken(f[0]) {
			fm.media, f[0] = f[0], "application"
		}
		parts := strings.Split(f[2], "/")
		if slices.ContainsFunc(parts, func(p string) bool { return !slices.Contains(pionProtos, p) }) &&
			!slices.ContainsFunc(parts, func(p string) bool { return !isToken(p) }) {
			fm.proto, f[2] = f[2], "UDP"
		}
		if fm.media == "" && fm.proto == "" {
			continue
		}
		foreign = append(foreign, fm)
		out = append(out, b[done:start]...)
		out = append(out, "m="+strings.Join(f, " ")+"\r\n"...)
		done = at
	}
	if foreign == nil {
		return b, nil
	}
	return append(out, b[done:]...), foreign
}

// isToken: RFC 4566's token (RFC 3261's token characters).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`{|}~", c) >= 0) {
			return false
		}
	}
	return true
}

const sessionOrder = "vosiuepcbtrzka" // RFC 4566 §5; r shares t's rank below
const mediaOrder = "micbka"

// sdpRank is a line type's place in order (r= shares t='s), -1 if the
// type has none there.
func sdpRank(order string, typ byte) int {
	if typ == 'r' {
		typ = 't'
	}
	return strings.IndexByte(order, typ)
}

// sessionMust are the line types a session section needs (t= apart).
const sessionMust = 1<<('v'-'a') | 1<<('o'-'a') | 1<<('s'-'a')

// wellFormed reports an SDP that tolerate would return unchanged: CRLF
// line ends, no blank line or white space around a line, known line types
// in RFC 4566 order, no repeated single-valued line, v=, o=, s= and t=
// present. Most SDP is; it then goes to the parser as it is, without a
// copy (no allocation here).
func wellFormed(b []byte) bool {
	order, last := sessionOrder, 0
	var seen uint32 // line types of the section, by letter
	media := false
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 3 || b[i-1] != '\r' {
			return false // no LF, an empty line, a line too short for x=y, or a bare LF
		}
		t := b[:i-1]
		b = b[i+1:]
		if t[1] != '=' || t[0] < 'a' || t[0] > 'z' {
			return false
		}
		if c := t[len(t)-1]; c == ' ' || c == '\t' || c == '\r' {
			return false
		}
		typ := t[0]
		if typ == 'm' {
			if !media && (seen&sessionMust != sessionMust || seen&(1<<('t'-'a')) == 0) {
				return false
			}
			order, last, seen, media = mediaOrder, 0, 0, true
		}
		r := sdpRank(order, typ)
		if r < last {
			return false // unknown here, or out of order
		}
		last = r
		bit := uint32(1) << (typ - 'a')
		if seen&bit != 0 && (strings.IndexByte("vosiuepck", typ) >= 0 || typ == 'm') {
			return false
		}
		seen |= bit
	}
	return media || (seen&sessionMust == sessionMust && seen&(1<<('t'-'a')) != 0)
}

// tolerate rewrites an SDP into RFC 4566 line order.
func tolerate(b []byte) ([]byte, error) {
	type line struct {
		typ  byte
		text string
	}
	var sections [][]line
	cur := []line{}
	for raw := range strings.SplitSeq(string(b), "\n") {
		t := strings.TrimRight(raw, " \t\r")
		t = strings.TrimLeft(t, " \t")
		if t == "" {
			continue
		}
		if len(t) < 2 || t[1] != '=' || t[0] < 'a' || t[0] > 'z' {
			return nil, fmt.Errorf("not an SDP line: %.40q", t)
		}
		if t[0] == 'm' {
			sections = append(sections, cur)
			cur = []line{}
		}
		cur = append(cur, line{t[0], t})
	}
	sections = append(sections, cur)
	rank := sdpRank
	var out bytes.Buffer
	for i, sec := range sections {
		order := sessionOrder
		if i > 0 {
			order = mediaOrder
		}
		kept := sec[:0]
		seen := map[byte]bool{}
		for _, l := range sec {
			if rank(order, l.typ) < 0 {
				continue // unknown (or misplaced session-only) line type
			}
			// Single-valued lines: keep the first.
			if strings.IndexByte("vosiuepck", l.typ) >= 0 || (i > 0 && l.typ == 'm') {
				if seen[l.typ] {
					continue
				}
				seen[l.typ] = true
			}
			kept = append(kept, l)
		}
		if i == 0 {
			if !seen['v'] {
				kept = append(kept, line{'v', "v=0"})
			}
			if !seen['o'] {
				return nil, errors.New("no o= line")
			}
			if !seen['s'] {
				kept = append(kept, line{'s', "s=-"})
			}
			if !slices.ContainsFunc(kept, func(l line) bool { return l.typ == 't' }) {
				kept = append(kept, line{'t', "t=0 0"})
			}
		}
		slices.SortStableFunc(kept, func(a, b line) int { return rank(order, a.typ) - rank(order, b.typ) })
		for _, l := range kept {
			out.WriteString(l.text)
			out.WriteString("\r\n")
		}
	}
	return out.Bytes(), nil
}

// Origin is the SBC's own o= line towards one leg: a stable random session
// id, and a version that goes up by one each time the SDP sent to that leg
// changes (RFC 3264 §8). Not safe for concurrent use: one per leg, used by
// the leg's owner.
type Origin struct {
	Username  string
	SessionID uint64
	Version   uint64
	Addr      netip.Addr
	last      [32]byte
	stamped   bool
}

// NewOrigin makes an origin with a random session id.
func NewOrigin(username string, addr netip.Addr) *Origin {
	// math/rand/v2's generator (ChaCha8, seeded from the system) is
	// unpredictable enough for an id that only has to be unique, and costs
	// no getrandom per call, as crypto/rand did (two origins per call).
	id := rand.Uint64() >> 2 // fits in a signed 63-bit for picky parsers
	if username == "" {
		username = "-"
	}
	return &Origin{Username: username, SessionID: id, Version: id & 0xffff, Addr: addr}
}

// stamp sets s's origin and returns s marshalled with session version 0
// (the version is what the hash of that decides).
func (o *Origin) stamp(s *sdp.SessionDescription, fallback netip.Addr) ([]byte, error) {
	addr := o.Addr
	if !addr.IsValid() {
		addr = fallback
	}
	addr = addr.Unmap()
	s.Origin = sdp.Origin{Username: o.Username, SessionID: o.SessionID, NetworkType: "IN",
		AddressType: addrType(addr), UnicastAddress: addr.String()}
	body, err := s.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	h := sha256.Sum256(body)
	if o.stamped && h != o.last {
		o.Version++
	}
	o.last, o.stamped = h, true
	s.Origin.SessionVersion = o.Version
	return body, nil
}

// RewriteSDP is Rewrite, marshalled: the body the other side receives.
// It marshals once where Rewrite then Marshal do twice (Rewrite marshals
// to decide the origin's version): the version is written into that
// first body.
func RewriteSDP(in *sdp.SessionDescription, a Anchor) ([]byte, error) {
	out, body, err := rewrite(in, a)
	if err != nil {
		return nil, err
	}
	o := out.Origin
	prefix := "o=" + o.Username + " " + strconv.FormatUint(o.SessionID, 10) + " 0 "
	i := bytes.Index(body, []byte(prefix))
	if i <= 0 || body[i-1] != '\n' {
		return out.Marshal() // not where pion writes it: marshal again
	}
	at := i + len(prefix) - 2 // the version's "0"
	res := make([]byte, 0, len(body)+20)
	res = append(res, body[:at]...)
	res = strconv.AppendUint(res, o.SessionVersion, 10)
	return append(res, body[at+1:]...), nil
}

// MediaAnchor is the SBC's side of one m= line towards the receiving leg.
type MediaAnchor struct {
	// Port is the relay's RTP port on that leg.
	Port int
	// RTCPPort, when set, is written as a=rtcp:<port> IN IP4 <addr>; with
	// rtcp-mux give Port. Zero writes no a=rtcp (port+1 implied).
	RTCPPort int
	// Addr overrides Anchor.Addr for this m= line (written as a media c=).
	Addr netip.Addr
	// Proto replaces the m= transport ("RTP/AVP", "RTP/SAVP",
	// "UDP/TLS/RTP/SAVPF"...) when the leg's profile differs; "" keeps it.
	Proto string
	// Attributes are the SBC's own per-leg profile (a=crypto from
	// Crypto.String, a=fingerprint, a=setup, ICE), appended to the
	// m= line's kept attributes.
	Attributes []sdp.Attribute
	// Refuse writes the line with port 0 (refused or removed, RFC 3264
	// 6 and 8.2) whatever its port: a line the SBC has no relay for (a
	// non-RTP line, a line a re-offer adds). Port is then not needed.
	Refuse bool
}

// Anchor describes the SBC towards the leg that receives the rewritten SDP.
type Anchor struct {
	// Addr is the relay address on that leg's side (c= and a=rtcp).
	Addr netip.Addr
	// Origin is the leg's o= state (NewOrigin); required.
	Origin *Origin
	// SessionName replaces s= (default "-": the original can name the
	// vendor).
	SessionName string
	// Media has one entry per m= line, in order. Lines with port 0
	// (refused) keep port 0 whatever their entry says.
	Media []MediaAnchor
	// SessionAttributes are appended at session level (a=ice-lite...).
	SessionAttributes []sdp.Attribute
	// DropAttributes are attribute names removed in addition to the
	// default list.
	DropAttributes []string
}

// droppedAttributes are removed at session and media level: transport and
// key material of the original side (ICE, DTLS, SDES, RFC 4145),
// a=rtcp, which is rewritten, a=tool, and the source attributes.
var droppedAttributes = []string{
	"candidate", "remote-candidates", "end-of-candidates",
	"ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch", "ice-pacing", "ice2",
	"crypto", "fingerprint", "setup", "tls-id", "connection",
	"rtcp", "alt", "x-nat",
	"tool", // names the other side's software, as User-Agent does
	// a=ssrc (RFC 5576) carries the source's CNAME, which RFC 3550 6.5.1
	// makes user@host (baresip 1.0.0 writes its AOR, sip:alice@10.20.30.40):
	// the other side's address. a=ssrc-group names those sources. Neither
	// is needed to receive the stream, and ids announced by one side are
	// wrong once the relay normalises SSRCs.
	"ssrc", "ssrc-group",
}

// Rewrite builds the SDP the other side receives from one leg's SDP: the
// SBC's origin, session name and connection address, its relay ports on
// the m= lines and a=rtcp, the original's codecs (rtpmap, fmtp,
// telephone-event), directions, rtcp-mux, ptime and other media attributes
// unchanged, and none of its addresses, ports, ICE candidates or keys (the
// SBC adds its own per-leg profile through MediaAnchor.Attributes).
// Session-level i=, u=, e=, p= and k= are dropped, and a=tool. A media line whose
// connection address is unspecified (0.0.0.0 hold, RFC 2543) and that has
// no ICE keeps the unspecified address: the hold is preserved. The input
// is not modified.
func Rewrite(in *sdp.SessionDescription, a Anchor) (*sdp.SessionDescription, error) {
	out, _, err := rewrite(in, a)
	return out, err
}

func rewrite(in *sdp.SessionDescription, a Anchor) (*sdp.SessionDescription, []byte, error) {
	if in == nil || a.Origin == nil || !a.Addr.IsValid() {
		return nil, nil, fmt.Errorf("%w: need an SDP, an origin and an address", ErrAnchorMismatch)
	}
	if len(a.Media) != len(in.MediaDescriptions) {
		return nil, nil, fmt.Errorf("%w: %d anchors for %d m= lines", ErrAnchorMismatch, len(a.Media), len(in.MediaDescriptions))
	}
	drop := func(key string) bool {
		for _, d := range droppedAttributes {
			if strings.EqualFold(key, d) {
				return true
			}
		}
		for _, d := range a.DropAttributes {
			if strings.EqualFold(key, d) {
				return true
			}
		}
		return false
	}
	name := a.SessionName
	if name == "" {
		name = "-"
	}
	out := &sdp.SessionDescription{
		Version:               in.Version,
		SessionName:           sdp.SessionName(name),
		ConnectionInformation: connInfo(a.Addr),
		Bandwidth:             slices.Clone(in.Bandwidth),
		TimeDescriptions:      slices.Clone(in.TimeDescriptions),
		TimeZones:             slices.Clone(in.TimeZones),
	}
	if len(out.TimeDescriptions) == 0 {
		out.TimeDescriptions = []sdp.TimeDescription{{}}
	}
	sessionICE := false
	for _, at := range in.Attributes {
		if isICE(at.Key) {
			sessionICE = true
		}
		if !drop(at.Key) {
			out.Attributes = append(out.Attributes, at)
		}
	}
	out.Attributes = append(out.Attributes, a.SessionAttributes...)
	for i, md := range in.MediaDescriptions {
		ma := a.Media[i]
		m := &sdp.MediaDescription{
			MediaName: sdp.MediaName{
				Media:   md.MediaName.Media,
				Port:    sdp.RangedPort{Value: ma.Port},
				Protos:  slices.Clone(md.MediaName.Protos),
				Formats: slices.Clone(md.MediaName.Formats),
			},
			MediaTitle: md.MediaTitle,
			Bandwidth:  slices.Clone(md.Bandwidth),
		}
		if ma.Proto != "" {
			m.MediaName.Protos = strings.Split(ma.Proto, "/")
		}
		refused := md.MediaName.Port.Value == 0 || ma.Refuse
		if refused {
			m.MediaName.Port.Value = 0
		} else if ma.Port <= 0 || ma.Port > 65535 {
			return nil, nil, fmt.Errorf("%w: m= line %d has no relay port", ErrAnchorMismatch, i)
		}
		addr := a.Addr
		if ma.Addr.IsValid() {
			addr = ma.Addr
		}
		hasICE := sessionICE
		for _, at := range md.Attributes {
			if isICE(at.Key) {
				hasICE = true
			}
		}
		orig := in.ConnectionInformation
		if md.ConnectionInformation != nil {
			orig = md.ConnectionInformation
		}
		hold := !refused && !hasICE && isUnspecified(orig)
		switch {
		case hold:
			m.ConnectionInformation = connInfo(unspecifiedLike(addr))
		case ma.Addr.IsValid() || md.ConnectionInformation != nil:
			m.ConnectionInformation = connInfo(addr)
		}
		for _, at := range md.Attributes {
			if !drop(at.Key) {
				m.Attributes = append(m.Attributes, at)
			}
		}
		if ma.RTCPPort > 0 && !refused && !hold {
			m.Attributes = append(m.Attributes, sdp.NewAttribute("rtcp",
				strconv.Itoa(ma.RTCPPort)+" IN "+addrType(addr)+" "+addr.String()))
		}
		if !refused {
			m.Attributes = append(m.Attributes, ma.Attributes...)
		}
		out.MediaDescriptions = append(out.MediaDescriptions, m)
	}
	body, err := a.Origin.stamp(out, a.Addr)
	if err != nil {
		return nil, nil, err
	}
	return out, body, nil
}

func isICE(key string) bool {
	k := strings.ToLower(key)
	return k == "candidate" || strings.HasPrefix(k, "ice-")
}

func addrType(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "IP4"
	}
	return "IP6"
}

func connInfo(a netip.Addr) *sdp.ConnectionInformation {
	a = a.Unmap()
	return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType(a), Address: &sdp.Address{Address: a.String()}}
}

func unspecifiedLike(a netip.Addr) netip.Addr {
	if a.Unmap().Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func isUnspecified(c *sdp.ConnectionInformation) bool {
	if c == nil || c.Address == nil {
		return false
	}
	a, err := netip.ParseAddr(c.Address.Address)
	return err == nil && a.IsUnspecified()
}

// RemoteMedia is what one m= line of a leg's SDP says about where its
// media goes: the input of LegConfig and Stream.Expect.
type RemoteMedia struct {
	RTP, RTCP netip.AddrPort // RTCP zero when not given by a=rtcp
	Mux       bool           // a=rtcp-mux
	Hold      bool           // unspecified connection address
	Cryptos   []Crypto       // valid a=crypto lines, in order
	Refused   []error        // a=crypto lines refused, to log
}

// Remote reads m= line i of a leg's SDP. The connection address must be an
// IP literal (a host name is ErrBadSDP: the wiring resolves names first).
func Remote(s *sdp.SessionDescription, i int) (RemoteMedia, error) {
	if s == nil || i < 0 || i >= len(s.MediaDescriptions) {
		return RemoteMedia{}, fmt.Errorf("%w: no m= line %d", ErrBadSDP, i)
	}
	md := s.MediaDescriptions[i]
	c := s.ConnectionInformation
	if md.ConnectionInformation != nil {
		c = md.ConnectionInformation
	}
	if c == nil || c.Address == nil {
		return RemoteMedia{}, fmt.Errorf("%w: m= line %d has no c=", ErrBadSDP, i)
	}
	ip, err := netip.ParseAddr(c.Address.Address)
	if err != nil {
		return RemoteMedia{}, fmt.Errorf("%w: c= %q is not an IP address", ErrBadSDP, c.Address.Address)
	}
	port := md.MediaName.Port.Value
	if port < 0 || port > 65535 {
		return RemoteMedia{}, fmt.Errorf("%w: m= port %d", ErrBadSDP, port)
	}
	r := RemoteMedia{RTP: netip.AddrPortFrom(ip.Unmap(), uint16(port)), Hold: ip.IsUnspecified()}
	var cryptos []string
	for _, at := range md.Attributes {
		switch strings.ToLower(at.Key) {
		case "rtcp-mux":
			r.Mux = true
		case "crypto":
			cryptos = append(cryptos, at.Value)
		case "rtcp":
			f := strings.Fields(at.Value)
			if len(f) == 0 {
				continue
			}
			p, err := strconv.ParseUint(f[0], 10, 16)
			if err != nil || p == 0 {
				return RemoteMedia{}, fmt.Errorf("%w: a=rtcp:%s", ErrBadSDP, at.Value)
			}
			rip := ip
			if len(f) >= 4 {
				if rip, err = netip.ParseAddr(f[3]); err != nil {
					return RemoteMedia{}, fmt.Errorf("%w: a=rtcp:%s", ErrBadSDP, at.Value)
				}
			}
			r.RTCP = netip.AddrPortFrom(rip.Unmap(), uint16(p))
		}
	}
	r.Cryptos, r.Refused = ParseCryptos(cryptos)
	return r, nil
}
