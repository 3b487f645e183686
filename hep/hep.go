// Package hep encodes HEP3 (Homer Encapsulation Protocol version 3)
// packets, written from the specification at github.com/sipcapture/HEP
// (HEP3 Network Protocol Specification, rev. 3). It knows nothing of SIP
// or of sockets: the SBC (sbc/hep.go) gives it a captured message and
// sends the bytes.
//
// A packet is the ASCII magic "HEP3", a 16-bit total length, then chunks;
// each chunk is a 16-bit vendor id (0x0000: generic), a 16-bit type, a
// 16-bit length that includes its 6-byte header, and the value; every
// integer is big-endian. The generic chunk types written here:
//
//	0x0001 IP protocol family (uint8: 2 IPv4, 10 IPv6)
//	0x0002 IP protocol id (uint8: 17 UDP, 6 TCP)
//	0x0003 / 0x0004 IPv4 source / destination address (4 bytes)
//	0x0005 / 0x0006 IPv6 source / destination address (16 bytes)
//	0x0007 / 0x0008 source / destination port (uint16)
//	0x0009 timestamp, seconds (uint32)
//	0x000a timestamp, microseconds offset (uint32)
//	0x000b protocol type (uint8: 1 SIP)
//	0x000c capture agent id (uint32)
//	0x000e authentication key (string; only when set)
//	0x000f captured packet payload
//	0x0011 internal correlation id (string; only when set)
package hep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Chunk types (vendor 0x0000).
const (
	ChunkIPFamily      = 0x0001
	ChunkIPProto       = 0x0002
	ChunkIPv4Src       = 0x0003
	ChunkIPv4Dst       = 0x0004
	ChunkIPv6Src       = 0x0005
	ChunkIPv6Dst       = 0x0006
	ChunkSrcPort       = 0x0007
	ChunkDstPort       = 0x0008
	ChunkTimeSec       = 0x0009
	ChunkTimeUsec      = 0x000a
	ChunkProtoType     = 0x000b
	ChunkAgentID       = 0x000c
	ChunkAuthKey       = 0x000e
	ChunkPayload       = 0x000f
	ChunkCorrelationID = 0x0011
)

// Values of the family, protocol and protocol type chunks.
const (
	FamilyIPv4 = 2
	FamilyIPv6 = 10
	ProtoUDP   = 17
	ProtoTCP   = 6
	TypeSIP    = 1
)

// MaxPacket is the largest packet: the total length is 16 bits.
const MaxPacket = 0xffff

// Packet is one captured message.
type Packet struct {
	Src, Dst      netip.AddrPort // both IPv4 or both IPv6 (an IPv4-mapped address counts as IPv4)
	Proto         uint8          // ProtoUDP or ProtoTCP
	Time          time.Time
	ProtoType     uint8 // TypeSIP
	AgentID       uint32
	AuthKey       string // omitted when empty
	CorrelationID string // omitted when empty
	Payload       []byte
}

// ErrTooLarge is Append's error for a packet over MaxPacket bytes.
var ErrTooLarge = errors.New("hep: packet over 65535 bytes")

// Append encodes p at the end of dst and returns the extended buffer.
// It allocates only when dst lacks the room.
func Append(dst []byte, p *Packet) ([]byte, error) {
	src, dstIP := p.Src.Addr().Unmap(), p.Dst.Addr().Unmap()
	if !src.IsValid() || !dstIP.IsValid() || src.Is4() != dstIP.Is4() {
		return dst, fmt.Errorf("hep: addresses not of one family: %s, %s", p.Src, p.Dst)
	}
	start := len(dst)
	dst = append(dst, 'H', 'E', 'P', '3', 0, 0)
	family, srcType, dstType := uint8(FamilyIPv4), uint16(ChunkIPv4Src), uint16(ChunkIPv4Dst)
	if !src.Is4() {
		family, srcType, dstType = FamilyIPv6, ChunkIPv6Src, ChunkIPv6Dst
	}
	dst = chunk8(dst, ChunkIPFamily, family)
	dst = chunk8(dst, ChunkIPProto, p.Proto)
	dst = chunkHeader(dst, srcType, src.BitLen()/8)
	dst = append(dst, src.AsSlice()...)
	dst = chunkHeader(dst, dstType, dstIP.BitLen()/8)
	dst = append(dst, dstIP.AsSlice()...)
	dst = chunk16(dst, ChunkSrcPort, p.Src.Port())
	dst = chunk16(dst, ChunkDstPort, p.Dst.Port())
	dst = chunk32(dst, ChunkTimeSec, uint32(p.Time.Unix()))
	dst = chunk32(dst, ChunkTimeUsec, uint32(p.Time.Nanosecond()/1000))
	dst = chunk8(dst, ChunkProtoType, p.ProtoType)
	dst = chunk32(dst, ChunkAgentID, p.AgentID)
	if p.AuthKey != "" {
		dst = chunkHeader(dst, ChunkAuthKey, len(p.AuthKey))
		dst = append(dst, p.AuthKey...)
	}
	if p.CorrelationID != "" {
		dst = chunkHeader(dst, ChunkCorrelationID, len(p.CorrelationID))
		dst = append(dst, p.CorrelationID...)
	}
	dst = chunkHeader(dst, ChunkPayload, len(p.Payload))
	dst = append(dst, p.Payload...)
	n := len(dst) - start
	if n > MaxPacket {
		return dst[:start], ErrTooLarge
	}
	binary.BigEndian.PutUint16(dst[start+4:], uint16(n))
	return dst, nil
}

func chunkHeader(dst []byte, typ uint16, n int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	return binary.BigEndian.AppendUint16(dst, uint16(6+n))
}

func chunk8(dst []byte, typ uint16, v uint8) []byte {
	return append(chunkHeader(dst, typ, 1), v)
}

func chunk16(dst []byte, typ uint16, v uint16) []byte {
	return binary.BigEndian.AppendUint16(chunkHeader(dst, typ, 2), v)
}

func chunk32(dst []byte, typ uint16, v uint32) []byte {
	return binary.BigEndian.AppendUint32(chunkHeader(dst, typ, 4), v)
}

// fixedSize is the value size of the fixed-size chunks.
var fixedSize = map[uint16]int{ChunkIPFamily: 1, ChunkIPProto: 1, ChunkIPv4Src: 4, ChunkIPv4Dst: 4, ChunkIPv6Src: 16,
	ChunkIPv6Dst: 16, ChunkSrcPort: 2, ChunkDstPort: 2, ChunkTimeSec: 4, ChunkTimeUsec: 4, ChunkProtoType: 1, ChunkAgentID: 4}

// Decode parses a HEP3 packet: the inverse of Append for the chunks it
// writes (others of vendor 0 and every vendor chunk are skipped). It is
// for tests and tools; the payload aliases b.
func Decode(b []byte) (*Packet, error) {
	if len(b) < 6 || string(b[:4]) != "HEP3" {
		return nil, errors.New("hep: no HEP3 magic")
	}
	total := int(binary.BigEndian.Uint16(b[4:]))
	if total < 6 || total > len(b) {
		return nil, fmt.Errorf("hep: total length %d of a %d-byte packet", total, len(b))
	}
	p := &Packet{}
	var src, dst netip.Addr
	var sport, dport uint16
	var sec, usec uint32
	for off := 6; off < total; {
		if total-off < 6 {
			return nil, errors.New("hep: truncated chunk header")
		}
		vendor := binary.BigEndian.Uint16(b[off:])
		typ := binary.BigEndian.Uint16(b[off+2:])
		n := int(binary.BigEndian.Uint16(b[off+4:]))
		if n < 6 || off+n > total {
			return nil, fmt.Errorf("hep: chunk 0x%04x of length %d at %d", typ, n, off)
		}
		v := b[off+6 : off+n]
		off += n
		if vendor != 0 {
			continue
		}
		if w, fixed := fixedSize[typ]; fixed && len(v) != w {
			return nil, fmt.Errorf("hep: chunk 0x%04x of %d bytes, want %d", typ, len(v), w)
		}
		switch typ {
		case ChunkIPProto:
			p.Proto = v[0]
		case ChunkIPv4Src, ChunkIPv6Src:
			src, _ = netip.AddrFromSlice(v)
		case ChunkIPv4Dst, ChunkIPv6Dst:
			dst, _ = netip.AddrFromSlice(v)
		case ChunkSrcPort:
			sport = binary.BigEndian.Uint16(v)
		case ChunkDstPort:
			dport = binary.BigEndian.Uint16(v)
		case ChunkTimeSec:
			sec = binary.BigEndian.Uint32(v)
		case ChunkTimeUsec:
			usec = binary.BigEndian.Uint32(v)
		case ChunkProtoType:
			p.ProtoType = v[0]
		case ChunkAgentID:
			p.AgentID = binary.BigEndian.Uint32(v)
		case ChunkAuthKey:
			p.AuthKey = string(v)
		case ChunkCorrelationID:
			p.CorrelationID = string(v)
		case ChunkPayload:
			p.Payload = v
		}
	}
	p.Src, p.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	p.Time = time.Unix(int64(sec), int64(usec)*1000)
	return p, nil
}
