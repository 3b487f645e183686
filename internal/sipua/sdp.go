package sipua

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
)

// SDP directions accepted by [SDP].
const (
	SendRecv = "sendrecv"
	SendOnly = "sendonly"
	RecvOnly = "recvonly"
	Inactive = "inactive"
)

// SDP returns a valid RFC 4566 session description with one audio stream
// at ip:port offering PCMU (0), PCMA (8) and telephone-event (101).
// sessionVersion goes into the o= line and must grow with every new
// description of the same session (re-INVITE, hold, resume). direction is
// one of sendrecv (also when ""), sendonly, recvonly or inactive. The session
// id is derived from ip and port, so it stays the same across versions.
func SDP(ip string, port int, sessionVersion int, direction string) []byte {
	if direction == "" {
		direction = SendRecv
	}
	family := "IP4"
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		family = "IP6"
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s:%d", ip, port)
	sessID := h.Sum32()
	var b bytes.Buffer
	fmt.Fprintf(&b, "v=0\r\n")
	fmt.Fprintf(&b, "o=- %d %d IN %s %s\r\n", sessID, sessionVersion, family, ip)
	fmt.Fprintf(&b, "s=-\r\n")
	fmt.Fprintf(&b, "c=IN %s %s\r\n", family, ip)
	fmt.Fprintf(&b, "t=0 0\r\n")
	fmt.Fprintf(&b, "m=audio %d RTP/AVP 0 8 101\r\n", port)
	fmt.Fprintf(&b, "a=rtpmap:0 PCMU/8000\r\n")
	fmt.Fprintf(&b, "a=rtpmap:8 PCMA/8000\r\n")
	fmt.Fprintf(&b, "a=rtpmap:101 telephone-event/8000\r\n")
	fmt.Fprintf(&b, "a=fmtp:101 0-16\r\n")
	fmt.Fprintf(&b, "a=ptime:20\r\n")
	fmt.Fprintf(&b, "a=%s\r\n", direction)
	return b.Bytes()
}

// Direction returns the media direction attribute of an SDP body (the last
// one found, so a media-level attribute wins over a session-level one):
// sendrecv, sendonly, recvonly or inactive. It returns sendrecv when there is
// none, as RFC 4566 says.
func Direction(sdp []byte) string {
	dir := SendRecv
	for _, line := range strings.Split(string(sdp), "\n") {
		line = strings.TrimSpace(line)
		switch line {
		case "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive":
			dir = line[2:]
		}
	}
	return dir
}

// answerDirection is the direction an answerer uses for an offer (RFC 3264
// 6.1): sendonly is answered recvonly and the other way round.
func answerDirection(offer []byte) string {
	switch Direction(offer) {
	case SendOnly:
		return RecvOnly
	case RecvOnly:
		return SendOnly
	case Inactive:
		return Inactive
	}
	return SendRecv
}
