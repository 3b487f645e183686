package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// Packet is one UDP datagram of a capture.
type Packet struct {
	Time             time.Time
	SrcPort, DstPort uint16
	Payload          []byte
}

// pcap link types the reader understands.
const (
	linkEthernet = 1   // DLT_EN10MB: Linux "lo" captures
	linkRaw      = 101 // DLT_RAW: IP without a link header
	linkSLL      = 113 // DLT_LINUX_SLL: "any"
)

// ReadPcap reads the UDP datagrams over IPv4 or IPv6 of a classic pcap
// file (as tcpdump -w writes it: micro- or nanosecond timestamps, either
// byte order; link types Ethernet, raw IP and Linux cooked). Other
// packets, IP fragments after the first and truncated headers are
// skipped; a truncated file ends the list without an error (the capture
// was stopped mid-write).
func ReadPcap(r io.Reader) ([]Packet, error) {
	var gh [24]byte
	if _, err := io.ReadFull(r, gh[:]); err != nil {
		return nil, fmt.Errorf("pcap: global header: %w", err)
	}
	var bo binary.ByteOrder
	var nano bool
	switch m := binary.LittleEndian.Uint32(gh[0:4]); m {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("pcap: bad magic %#x (pcapng is not supported: use tcpdump -w)", m)
	}
	link := bo.Uint32(gh[20:24]) & 0x0fffffff
	if link != linkEthernet && link != linkRaw && link != linkSLL {
		return nil, fmt.Errorf("pcap: link type %d not supported", link)
	}
	var out []Packet
	var rh [16]byte
	for {
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return out, nil
			}
			return out, err
		}
		sec, frac := bo.Uint32(rh[0:4]), bo.Uint32(rh[4:8])
		capLen := bo.Uint32(rh[8:12])
		if capLen > 1<<20 {
			return out, fmt.Errorf("pcap: record of %d bytes", capLen)
		}
		data := make([]byte, capLen)
		if _, err := io.ReadFull(r, data); err != nil {
			return out, nil // truncated last record
		}
		if !nano {
			frac *= 1000
		}
		p, ok := udpOf(link, data)
		if !ok {
			continue
		}
		p.Time = time.Unix(int64(sec), int64(frac))
		out = append(out, p)
	}
}

// udpOf extracts the UDP datagram of a captured frame.
func udpOf(link uint32, b []byte) (Packet, bool) {
	var etherType uint16
	switch link {
	case linkEthernet:
		if len(b) < 14 {
			return Packet{}, false
		}
		etherType, b = binary.BigEndian.Uint16(b[12:14]), b[14:]
		if etherType == 0x8100 && len(b) >= 4 { // one VLAN tag
			etherType, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
		}
	case linkSLL:
		if len(b) < 16 {
			return Packet{}, false
		}
		etherType, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
	case linkRaw:
		if len(b) < 1 {
			return Packet{}, false
		}
		etherType = map[byte]uint16{4: 0x0800, 6: 0x86dd}[b[0]>>4]
	}
	switch etherType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return Packet{}, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl || b[9] != 17 {
			return Packet{}, false
		}
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 { // not the first fragment
			return Packet{}, false
		}
		b = b[ihl:]
	case 0x86dd:
		if len(b) < 40 || b[6] != 17 { // UDP right after the fixed header only
			return Packet{}, false
		}
		b = b[40:]
	default:
		return Packet{}, false
	}
	if len(b) < 8 {
		return Packet{}, false
	}
	return Packet{
		SrcPort: binary.BigEndian.Uint16(b[0:2]),
		DstPort: binary.BigEndian.Uint16(b[2:4]),
		Payload: b[8:],
	}, true
}

// SetupLatency is what a capture on the caller's side says about call
// setup: per call, the time from the caller's first INVITE to the first
// 100 and to the first 200 for that INVITE.
type SetupLatency struct {
	Invites     int             // calls whose INVITE the capture holds
	To100       []time.Duration // sorted
	To200       []time.Duration // sorted
	NoFinal     int             // INVITEs without a 200 in the capture
	Unparseable int             // datagrams to or from the caller that are not SIP
}

// SetupLatencies reads the caller's side of a capture: datagrams from
// callerPort starting with "INVITE " open a call (its first copy; a
// retransmission does not move the start), responses to callerPort whose
// CSeq method is INVITE close its INVITE→100 and INVITE→200 intervals
// (first copy of each). Calls are told apart by Call-ID.
func SetupLatencies(pkts []Packet, callerPort uint16) SetupLatency {
	type call struct {
		invite       time.Time
		got100, got2 bool
	}
	calls := map[string]*call{}
	var res SetupLatency
	for _, p := range pkts {
		switch {
		case p.SrcPort == callerPort:
			if !bytes.HasPrefix(p.Payload, []byte("INVITE ")) {
				continue
			}
			id, _, ok := sipCallIDCSeq(p.Payload)
			if !ok {
				res.Unparseable++
				continue
			}
			if _, seen := calls[string(id)]; !seen {
				calls[string(id)] = &call{invite: p.Time}
			}
		case p.DstPort == callerPort:
			var code int
			if len(p.Payload) < 12 || !bytes.HasPrefix(p.Payload, []byte("SIP/2.0 ")) {
				res.Unparseable++
				continue
			}
			if _, err := fmt.Sscanf(string(p.Payload[8:11]), "%3d", &code); err != nil {
				res.Unparseable++
				continue
			}
			id, method, ok := sipCallIDCSeq(p.Payload)
			if !ok {
				res.Unparseable++
				continue
			}
			c := calls[string(id)]
			if c == nil || !bytes.Equal(method, []byte("INVITE")) {
				continue
			}
			switch {
			case code == 100 && !c.got100:
				c.got100 = true
				res.To100 = append(res.To100, p.Time.Sub(c.invite))
			case code == 200 && !c.got2:
				c.got2 = true
				res.To200 = append(res.To200, p.Time.Sub(c.invite))
			}
		}
	}
	res.Invites = len(calls)
	for _, c := range calls {
		if !c.got2 {
			res.NoFinal++
		}
	}
	slices.Sort(res.To100)
	slices.Sort(res.To200)
	return res
}

// sipCallIDCSeq returns the Call-ID value and the CSeq method of a SIP
// message's header (long or compact names, any case).
func sipCallIDCSeq(msg []byte) (callID, method []byte, ok bool) {
	head := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		head = msg[:i]
	}
	lines := bytes.Split(head, []byte("\r\n"))
	for _, l := range lines[1:] {
		colon := bytes.IndexByte(l, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimSpace(l[:colon])
		val := bytes.TrimSpace(l[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Call-ID")) || bytes.EqualFold(name, []byte("i")):
			callID = val
		case bytes.EqualFold(name, []byte("CSeq")):
			if f := bytes.Fields(val); len(f) == 2 {
				method = f[1]
			}
		}
	}
	return callID, method, len(callID) > 0 && len(method) > 0
}

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted durations, 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
