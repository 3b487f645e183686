package sbc

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/acl"
)

// Connections peers open to the SIP listeners (TCP, TLS, WSS): counted
// per source (an IPv4 address or an IPv6 /64: one host has a whole /64
// to connect from) and in all, capped by limits.tcp_connections_per_source
// and limits.tcp_connections at accept, and kept in a table so that a
// block closes the open connections of the blocked prefix at once
// (watchBlocks) instead of waiting for their next message.

// connTable is the open accepted connections.
type connTable struct {
	mu    sync.Mutex
	per   map[netip.Prefix]int // by acl.SourceKey
	total int
	open  map[*countedConn]struct{}
}

// admit takes a slot for a connection from src accepted on realm ep's
// listener of transport t and returns it wrapped; or the reason it is
// refused. Pool targets are exempt from both caps, trunks from the
// per-source one.
func (ct *connTable) admit(c net.Conn, ep *endpoint, t string, src netip.AddrPort, st *snapshot) (*countedConn, reason) {
	s := ep.sbc
	backend := st.backends[src.Addr()]
	_, trunk := st.trunks.Lookup(src.Addr())
	key := acl.SourceKey(src.Addr())
	lim := st.pol.Limits
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.per == nil {
		ct.per = map[netip.Prefix]int{}
		ct.open = map[*countedConn]struct{}{}
	}
	switch {
	case backend:
	case lim.TCPConnections > 0 && ct.total >= lim.TCPConnections:
		return nil, reasonConnections
	case !trunk && lim.TCPConnectionsPerSource > 0 && ct.per[key] >= lim.TCPConnectionsPerSource:
		return nil, reasonSourceConnections
	}
	ct.per[key]++
	ct.total++
	cc := &countedConn{Conn: c, table: ct, key: key, src: src, ep: ep, transport: t,
		gauge: s.metrics.ConnsOpen.WithLabelValues(ep.name, t)}
	ct.open[cc] = struct{}{}
	cc.gauge.Inc()
	return cc, ""
}

// release gives cc's slot back.
func (ct *connTable) release(cc *countedConn) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	delete(ct.open, cc)
	ct.total--
	if ct.per[cc.key] <= 1 {
		delete(ct.per, cc.key)
	} else {
		ct.per[cc.key]--
	}
	cc.gauge.Dec()
}

// len returns the number of open connections and of sources holding them.
func (ct *connTable) len() (conns, sources int) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.total, len(ct.per)
}

// bySource returns the open connections of src's source key.
func (ct *connTable) bySource(src netip.Addr) int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.per[acl.SourceKey(src)]
}

// matching returns the open connections whose source match says yes to.
func (ct *connTable) matching(match func(netip.Addr) bool) []*countedConn {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	var out []*countedConn
	for cc := range ct.open {
		if match(cc.src.Addr()) {
			out = append(out, cc)
		}
	}
	return out
}

// countedConn is an accepted connection holding a slot of its source; it
// gives the slot back once, when closed.
type countedConn struct {
	net.Conn
	table     *connTable
	key       netip.Prefix
	src       netip.AddrPort
	ep        *endpoint
	transport string
	gauge     prometheus.Gauge
	once      sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.table.release(c) })
	return err
}

// watchBlocks closes the open connections of every prefix put on the
// blocklist (and, after the subscription fell behind, of every blocked
// source), counted as stage stream, reason blocked. Messages the
// connection delivered before are handled as usual; nothing after.
func (s *SBC) watchBlocks(ctx context.Context, sub *acl.Subscription) {
	defer sub.Close()
	for {
		var match func(netip.Addr) bool
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-sub.C():
			if !ok {
				return
			}
			switch ch.Op {
			case acl.OpAdd:
				pfx := ch.Entry.Prefix
				match = func(a netip.Addr) bool { return pfx.Contains(a) }
			case acl.OpResync:
				sub.Resync()
				match = s.def.blocklist.Blocked
			default:
				continue
			}
		}
		for _, cc := range s.conns.matching(match) {
			s.act(cc.ep, peer{src: cc.src}, nil, nil, silent(stageStream, reasonBlocked).with("transport", cc.transport))
			cc.Close()
		}
	}
}
