package attack

import (
	"encoding/hex"
	"math/rand/v2"
	"strconv"
)

// runID returns a random token that makes the Call-IDs, tags and branches
// of one run distinct from those of other runs.
func runID() string {
	var b [6]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b[:])
}

// idGen makes identifiers unique within a run: prefix "-" counter.
type idGen struct {
	prefix string
	n      uint64
}

// next appends the next identifier to b.
func (g *idGen) next(b []byte) []byte {
	g.n++
	b = append(b, g.prefix...)
	b = append(b, '-')
	return strconv.AppendUint(b, g.n, 10)
}

// nextString returns the next identifier.
func (g *idGen) nextString() string {
	return string(g.next(nil))
}

// appendSDP appends the body of an INVITE offer: one PCMU/PCMA audio stream
// on the sender's address.
func appendSDP(b []byte, host string, sess uint64) []byte {
	b = append(b, "v=0\r\no=- "...)
	b = strconv.AppendUint(b, sess, 10)
	b = append(b, " 1 IN "...)
	b = append(b, ipVersion(host)...)
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, "\r\ns=-\r\nc=IN "...)
	b = append(b, ipVersion(host)...)
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, "\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"...)
	return b
}

func ipVersion(host string) string {
	for i := 0; i < len(host); i++ {
		if host[i] == ':' {
			return "IP6"
		}
	}
	return "IP4"
}

// hostOnly strips the port (and IPv6 brackets) from "host:port".
func hostOnly(hp string) string {
	for i := len(hp) - 1; i >= 0; i-- {
		if hp[i] == ':' {
			h := hp[:i]
			if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
				h = h[1 : len(h)-1]
			}
			return h
		}
		if hp[i] == ']' {
			break
		}
	}
	return hp
}
