package sbc

import (
	"bytes"
	"net/netip"
	"strconv"
	"sync"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/sbc/validate"
)

// The 100 Trying of a new INVITE over UDP, sent by the reader that read
// it (udpbatch_linux.go) as soon as its batch is read and filtered:
// built from the INVITE's bytes, before the INVITE is parsed and before
// the rest of the batch is handled. A burst's INVITEs are each answered
// 100 within microseconds of the read, and each call is then set up at
// once, with no 100 to build and no wait for the INVITEs behind it.
//
// Only where the SBC would answer the INVITE anyway, whatever its checks
// find (a 100 may come before any final response, RFC 3261 8.2.6.1):
//   - an INVITE out of a dialog (no To tag) that passed the read filter
//     (blocklist, packet budget, gate, the raw checks);
//   - from a trunk of the realm that may use UDP, or from a backend of
//     the realm (the sources the SBC answers whatever it finds);
//   - not from a scanner's User-Agent (never answered, not even 100);
//   - limits.over_limit_action is not "drop" (a call over a limit is
//     refused silently then).
//
// Every other INVITE gets its 100 from startCall, after the checks, as
// before. A retransmitted INVITE from such a source gets another 100,
// besides what its transaction sends again (the last provisional or final
// response): a UAC ignores a 100 after another response, and a
// retransmission of the INVITE of a call already confirmed (dropped
// silently by the pipeline) gets a 100 its UAC has no transaction for.
// The 100 is as sipgo builds it (sip.NewResponseFromRequest): every Via,
// the first with rport and received filled in when it asks for rport
// (RFC 3581), From, To, Call-ID, CSeq, Timestamp, Content-Length 0, sent
// where sipgo sends it (the source address, the top Via's port, or the
// source port for rport); the values are copied as they came.

// trying is what appendTrying read from an INVITE besides the 100.
type trying struct {
	to     netip.AddrPort // where the 100 goes
	branch []byte         // the top Via's branch (in the datagram)
	ua     []byte         // the first User-Agent's value, nil if none
}

var invitePrefix = []byte("INVITE ")

// appendTrying appends to dst the 100 Trying for the INVITE datagram
// data from src. ok is false, and dst returned as it was, for a datagram
// it does not answer: not an INVITE, a To with a tag, a header line that
// is folded or has no colon, no line end, a top Via that is not
// SIP/2.0/UDP with a port it can read, rport with received already set
// (rare: the normal path answers those).
func appendTrying(dst, data []byte, src netip.AddrPort) (out []byte, t trying, ok bool) {
	if !bytes.HasPrefix(data, invitePrefix) {
		return dst, t, false
	}
	i := bytes.Index(data, crlf)
	if i < 0 {
		return dst, t, false
	}
	i += 2
	out = append(dst, "SIP/2.0 100 Trying\r\n"...)
	var from, to, callID, cseq []byte
	var stamps [4][]byte
	nstamps, vias := 0, 0
	for {
		j := bytes.Index(data[i:], crlf)
		if j < 0 {
			return dst, t, false
		}
		line := data[i : i+j]
		i += j + 2
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			return dst, t, false
		}
		name := bytes.TrimRight(line[:colon], " \t")
		switch {
		case isName(name, "via", "v"):
			if vias == 0 {
				var vok bool
				if out, vok = appendTopVia(out, line, colon, src, &t); !vok {
					return dst, t, false
				}
			} else {
				out = append(append(out, line...), crlf...)
			}
			vias++
		case isName(name, "from", "f"):
			if from == nil {
				from = line
			}
		case isName(name, "to", "t"):
			if to == nil {
				to = line
			}
		case isName(name, "call-id", "i"):
			if callID == nil {
				callID = line
			}
		case isName(name, "cseq", ""):
			if cseq == nil {
				cseq = line
			}
		case isName(name, "timestamp", ""):
			if nstamps == len(stamps) {
				return dst, t, false
			}
			stamps[nstamps] = line
			nstamps++
		case isName(name, "user-agent", ""):
			if t.ua == nil {
				t.ua = bytes.Trim(line[colon+1:], " \t")
			}
		}
	}
	if vias == 0 || from == nil || to == nil || callID == nil || cseq == nil {
		return dst, t, false
	}
	if _, tagged := validate.HeaderParam(to[bytes.IndexByte(to, ':')+1:], "tag"); tagged {
		return dst, t, false // in a dialog: a re-INVITE is its call's
	}
	for _, l := range [][]byte{from, to, callID, cseq} {
		out = append(append(out, l...), crlf...)
	}
	for _, l := range stamps[:nstamps] {
		out = append(append(out, l...), crlf...)
	}
	return append(out, "Content-Length: 0\r\n\r\n"...), t, true
}

var crlf = []byte("\r\n")

// isName reports whether a header name is long or its compact form
// (none if ""), in any case.
func isName(name []byte, long, compact string) bool {
	return bytes.EqualFold(name, []byte(long)) || compact != "" && len(name) == 1 && (name[0]|0x20) == compact[0]
}

// appendTopVia appends the first Via line, with rport and received filled
// in when its first value has an rport without a value, and finds the
// 100's destination and the branch (into t).
func appendTopVia(out, line []byte, colon int, src netip.AddrPort, t *trying) ([]byte, bool) {
	v := line[colon+1:]
	end := len(v) // the first value: up to a ',' (a Via has no quoted strings the SBC takes)
	if k := bytes.IndexByte(v, ','); k >= 0 {
		end = k
	}
	if bytes.IndexByte(v[:end], '"') >= 0 {
		return out, false
	}
	// SIP/2.0/UDP, LWS, sent-by (host [":" port]), params: the form
	// sipgo reads (it takes no LWS inside the protocol or the params).
	const proto = "SIP/2.0/UDP"
	lead := 0
	for lead < end && (v[lead] == ' ' || v[lead] == '\t') {
		lead++
	}
	if end-lead <= len(proto) || !bytes.EqualFold(v[lead:lead+len(proto)], []byte(proto)) {
		return out, false
	}
	p := lead + len(proto)
	if p >= end || (v[p] != ' ' && v[p] != '\t') {
		return out, false
	}
	for p < end && (v[p] == ' ' || v[p] == '\t') {
		p++
	}
	switch {
	case p < end && v[p] == '[':
		k := bytes.IndexByte(v[p:end], ']')
		if k < 0 {
			return out, false
		}
		p += k + 1
	default:
		for p < end && v[p] != ':' && v[p] != ';' && v[p] != ' ' && v[p] != '\t' {
			p++
		}
	}
	port := 5060 // RFC 3261 18.2.2: the default port of UDP
	if p < end && v[p] == ':' {
		p++
		s := p
		for p < end && v[p] >= '0' && v[p] <= '9' {
			p++
		}
		n, err := strconv.Atoi(string(v[s:p]))
		if err != nil || n <= 0 || n > 65535 {
			return out, false
		}
		port = n
	}
	// via-params: ;name[=value] up to the end of the first value, which
	// may end in LWS.
	last := end
	for last > p && (v[last-1] == ' ' || v[last-1] == '\t') {
		last--
	}
	rportAt, rportEnd := -1, -1 // the rport param without a value
	received := false
	for p < last {
		if v[p] != ';' {
			return out, false
		}
		p++
		ns := p
		for p < last && v[p] != '=' && v[p] != ';' {
			p++
		}
		name := v[ns:p]
		var val []byte
		if p < last && v[p] == '=' {
			p++
			vs := p
			for p < last && v[p] != ';' {
				p++
			}
			val = v[vs:p]
		}
		if len(name) == 0 || bytes.ContainsAny(name, " \t") || bytes.ContainsAny(val, " \t") {
			return out, false
		}
		switch string(name) { // sipgo's params are case-sensitive
		case "branch":
			if t.branch == nil {
				t.branch = val
			}
		case "rport":
			if len(val) == 0 && rportAt < 0 {
				rportAt, rportEnd = ns, p
			}
		case "received":
			received = true
		}
	}
	if len(t.branch) == 0 {
		return out, false
	}
	to := netip.AddrPortFrom(src.Addr().Unmap(), uint16(port))
	head := line[:colon+1]
	if rportAt < 0 {
		t.to = to
		return append(append(out, line...), crlf...), true
	}
	if received {
		return out, false
	}
	// rport=<source port> where rport was, received=<source address> at
	// the end of the first value, as sipgo's Params.Add does.
	t.to = netip.AddrPortFrom(to.Addr(), src.Port())
	out = append(out, head...)
	out = append(out, v[:rportAt]...)
	out = append(out, "rport="...)
	out = strconv.AppendUint(out, uint64(src.Port()), 10)
	out = append(out, v[rportEnd:last]...)
	out = append(out, ";received="...)
	out = to.Addr().AppendTo(out)
	out = append(out, v[last:]...)
	return append(out, crlf...), true
}

// earlyTrying is the 100 Trying a reader of ep sends at once for a
// datagram from src that passed the read filter, appended to dst, or ok
// false when the datagram is not one it answers (above).
func (s *SBC) earlyTrying(ep *endpoint, dst, data []byte, src netip.AddrPort) ([]byte, trying, bool) {
	if !bytes.HasPrefix(data, invitePrefix) {
		return dst, trying{}, false
	}
	st := s.state.Load()
	if st.pol.Limits.OverLimitAction == "drop" {
		return dst, trying{}, false
	}
	ip := src.Addr().Unmap()
	backend := st.targetOn[realmAddr{ep.name, ip}]
	if !backend && !udpTrunk(st, ep.name, ip) {
		return dst, trying{}, false
	}
	out, t, ok := appendTrying(dst, data, src)
	if !ok {
		return dst, t, false
	}
	if t.ua != nil && !backend {
		if _, scan := s.def.scanner.Load().Match(string(t.ua)); scan {
			return dst, t, false
		}
	}
	return out, t, true
}

// udpTrunk reports whether src is a source of a trunk of realm that the
// SBC recognises over UDP (classify: no identity required, UDP among its
// transports).
func udpTrunk(st *snapshot, realm string, src netip.Addr) bool {
	name, ok := st.trunks.Lookup(src)
	if !ok {
		return false
	}
	tr := st.pol.Trunk(name)
	return tr != nil && tr.Realm == realm && len(tr.Identities) == 0 && tr.OnTransport("udp")
}

// tried is the set of INVITEs (by top Via branch) a reader of the realm
// answered 100 at once and handed to sipgo: startCall takes its INVITE's
// out, and sends no 100 of its own. Each reader removes what is left of
// its own (an INVITE the pipeline refused before startCall) before its
// next read. A branch read twice at once (a retransmission read by two
// readers) is taken once: the other INVITE gets a second 100.
type tried struct {
	mu sync.Mutex
	m  map[triedKey]struct{}
}

// triedKey is an INVITE answered at once: its source and top Via branch.
type triedKey struct {
	src    netip.AddrPort
	branch string
}

func (t *tried) add(src netip.AddrPort, branch []byte) triedKey {
	k := triedKey{src, string(branch)}
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[triedKey]struct{})
	}
	t.m[k] = struct{}{}
	t.mu.Unlock()
	return k
}

// take reports whether the INVITE from src with branch was answered at
// once, and forgets it.
func (t *tried) take(src netip.AddrPort, branch string) bool {
	k := triedKey{netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), branch}
	t.mu.Lock()
	_, ok := t.m[k]
	if ok {
		delete(t.m, k)
	}
	t.mu.Unlock()
	return ok
}

// forget removes keys that were not taken.
func (t *tried) forget(keys []triedKey) {
	t.mu.Lock()
	for _, k := range keys {
		delete(t.m, k)
	}
	t.mu.Unlock()
}

// tookTrying reports whether a reader answered req (from src) 100 Trying
// already, and forgets that it did.
func (u *udpPeers) tookTrying(src netip.AddrPort, req *sip.Request) bool {
	if u == nil {
		return false
	}
	return u.tried.take(src, topBranch(req))
}
