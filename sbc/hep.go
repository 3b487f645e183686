package sbc

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/hep"
	"github.com/sbc-project/sbc/policy"
)

// The HEP3 export ([hep]): every SIP message the SBC reads or writes, as
// a HEP3 packet (package hep) over UDP to a capture server (Homer), the
// two legs of a call under one correlation id, the A leg's Call-ID.
//
// Where the messages are taken:
//   - read: the read filter of each realm (filter.go) sees every message
//     sipgo is about to parse, on every transport: UDP datagrams and
//     WebSocket messages as they are, the messages streamConn framed on
//     TCP and TLS connections the SBC accepted (plain text, after TLS),
//     and the read chunks of connections the SBC opened (usually one
//     message each). Only what the filter passes is exported: a flood the
//     filter drops costs the collector nothing.
//   - written: sipgo's write hook (sip.SIPTracer), which sees every
//     message sipgo writes, on every transport and connection (the
//     transaction layer's own 100 Trying, retransmissions and ACKs
//     included), in plain text. The hook is process-wide and is called
//     only while sip.SIPDebug is true: New sets it, once and for the rest
//     of the process, when the policy enables [hep]; with it sipgo also
//     formats the local and remote address of every UDP datagram and
//     WebSocket frame into strings (two small allocations each, before
//     the read filter) and logs each WebSocket frame at debug level.
//     The hook gives a message to the SBC whose listener addresses (or,
//     over a connection it opened, IPs) it left from: the user agents of
//     tests and of `sbc demo` in the same process are not exported.
//
// Nothing here blocks the SIP path: a message is copied into a bounded
// queue (full: dropped and counted, sbc_hep_packets_total{result=
// "dropped"}); one goroutine finds the correlation id (the call table's
// Call-ID index), encodes and sends.

// hepExport is an SBC's HEP exporter.
type hepExport struct {
	s     *SBC
	cfg   policy.HEP
	conn  *net.UDPConn
	q     chan hepMsg
	done  chan struct{}
	local map[netip.AddrPort]bool // the SBC's listener addresses (written messages leave from them)
	ips   map[netip.Addr]bool     // and their IPs (connections the SBC opened leave from other ports)
	anyIP bool                    // a listener is bound to the unspecified address: any IP is the SBC's

	closeOnce sync.Once
	mu        sync.RWMutex // guards closed against capture's send
	closed    bool

	sent, dropped, failed atomic.Uint64
}

type hepMsg struct {
	t        time.Time
	proto    uint8
	src, dst netip.AddrPort
	buf      *[]byte // the copy of the message, from hepBufs
}

// hepBufs recycles the copies of messages between capture and the
// exporter's goroutine: capturing allocates nothing once warm.
var hepBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

type hepStats struct{ sent, dropped, failed uint64 }

// hepExports are the exporters of the SBCs in the process (the write hook
// is process-wide).
var hepExports atomic.Pointer[[]*hepExport]
var hepExportsMu sync.Mutex

func init() {
	// Installed once, before any transport runs; called only while
	// sip.SIPDebug is true (hepTrace).
	sip.SIPDebugTracer(sipTraceHook{})
}

// hepTrace turns sipgo's message hooks on, once (sip.SIPDebug is a plain
// global: it is only ever written here, and only from false to true).
var hepTrace sync.Once

func enableSIPTrace() {
	hepTrace.Do(func() {
		if !sip.SIPDebug {
			sip.SIPDebug = true
		}
	})
}

// openHEP starts the exporter of [hep]. The listeners' addresses are
// known only after Start binds them: register adds them.
func (s *SBC) openHEP(cfg policy.HEP) (*hepExport, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(cfg.Addr))
	if err != nil {
		return nil, err
	}
	h := &hepExport{s: s, cfg: cfg, conn: conn, q: make(chan hepMsg, cfg.Queue), done: make(chan struct{}),
		local: map[netip.AddrPort]bool{}, ips: map[netip.Addr]bool{}}
	for _, ep := range s.realms {
		for _, a := range ep.laddr {
			a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
			h.local[a] = true
			h.ips[a.Addr()] = true
			h.anyIP = h.anyIP || a.Addr().IsUnspecified()
		}
	}
	go h.run()
	hepExportsMu.Lock()
	list := []*hepExport{h}
	if p := hepExports.Load(); p != nil {
		list = append(list, *p...)
	}
	hepExports.Store(&list)
	hepExportsMu.Unlock()
	return h, nil
}

func (h *hepExport) close() {
	h.closeOnce.Do(func() {
		hepExportsMu.Lock()
		if p := hepExports.Load(); p != nil {
			var list []*hepExport
			for _, x := range *p {
				if x != h {
					list = append(list, x)
				}
			}
			hepExports.Store(&list)
		}
		hepExportsMu.Unlock()
		h.mu.Lock()
		h.closed = true
		close(h.q)
		h.mu.Unlock()
		<-h.done
		h.conn.Close()
	})
}

func (h *hepExport) stats() hepStats {
	return hepStats{sent: h.sent.Load(), dropped: h.dropped.Load(), failed: h.failed.Load()}
}

// capture queues a copy of one message; never blocks.
func (h *hepExport) capture(proto uint8, src, dst netip.AddrPort, data []byte) {
	if len(data) == 0 || (len(data) <= 4 && onlyCRLF(data)) {
		return // keep-alives are no SIP messages
	}
	m := hepMsg{t: time.Now(), proto: proto, src: src, dst: dst}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return
	}
	if len(h.q) == cap(h.q) {
		h.dropped.Add(1) // full: not even the copy
		return
	}
	bp := hepBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], data...)
	m.buf = bp
	select {
	case h.q <- m:
	default:
		h.dropped.Add(1)
		putHEPBuf(bp)
	}
}

func (h *hepExport) run() {
	defer close(h.done)
	buf := make([]byte, 0, 4096)
	p := hep.Packet{ProtoType: hep.TypeSIP, AgentID: uint32(h.cfg.AgentID), AuthKey: h.cfg.AuthKey}
	for m := range h.q {
		data := *m.buf
		p.Src, p.Dst, p.Proto, p.Time, p.Payload = m.src, m.dst, m.proto, m.t, data
		p.CorrelationID = ""
		if id := sipCallID(data); id != "" {
			p.CorrelationID = h.s.calls.correlation(id)
		}
		var err error
		buf, err = hep.Append(buf[:0], &p)
		putHEPBuf(m.buf)
		if err == nil {
			_, err = h.conn.Write(buf)
		}
		if err != nil {
			h.failed.Add(1)
			continue
		}
		h.sent.Add(1)
	}
}

// putHEPBuf returns a message copy to the pool, unless a large message
// made it too big to keep.
func putHEPBuf(bp *[]byte) {
	if cap(*bp) <= 16<<10 {
		hepBufs.Put(bp)
	}
}

// owns reports whether a message written from laddr (over a stream
// transport or not) left from this SBC: from one of its listener sockets
// (a UDP socket bound to 0.0.0.0 reports that address), or, over a
// connection the SBC opened (another port), from one of its IPs.
func (h *hepExport) owns(laddr netip.AddrPort, stream bool) bool {
	return h.local[laddr] || (stream && (h.anyIP || h.ips[laddr.Addr()]))
}

// hepRead is the read side: called by the read filter for each message
// it passes.
func (s *SBC) hepRead(info sip.TransportReadProps, data []byte) {
	h := s.hepOut()
	if h == nil {
		return
	}
	src, ok1 := addrPortOf(info.RemoteAddr)
	dst, ok2 := addrPortOf(info.LocalAddr)
	if !ok1 || !ok2 {
		return
	}
	h.capture(hepProto(info.Transport), src, dst, data)
}

// hepOut is the SBC's exporter, if [hep] is on.
func (s *SBC) hepOut() *hepExport {
	o := s.ops.Load()
	if o == nil {
		return nil
	}
	return o.hep
}

func hepProto(transport string) uint8 {
	if strings.EqualFold(transport, "udp") {
		return hep.ProtoUDP
	}
	return hep.ProtoTCP
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	case nil:
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// sipTraceHook is sipgo's process-wide message hook. Reads are taken at
// the read filter instead (after it decided); writes go to the exporter
// of the SBC they left from.
type sipTraceHook struct{}

func (sipTraceHook) SIPTraceRead(string, string, string, []byte) {}

func (sipTraceHook) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	p := hepExports.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	src, err := netip.ParseAddrPort(laddr)
	if err != nil {
		return
	}
	dst, err := netip.ParseAddrPort(raddr)
	if err != nil {
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	proto := hepProto(transport)
	for _, h := range *p {
		if h.owns(src, proto == hep.ProtoTCP) {
			h.capture(proto, src, dst, msg)
			return
		}
	}
}

// sipCallID returns the Call-ID header value of a raw SIP message ("" if
// it has none in its header): "Call-ID" or its compact form "i", any
// case, trimmed.
func sipCallID(msg []byte) string {
	head := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		head = msg[:i]
	}
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		name, val, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Call-ID")) || bytes.EqualFold(name, []byte("i")) {
			return string(bytes.TrimSpace(val))
		}
	}
	return ""
}
