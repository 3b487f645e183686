package sbc

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ListenerInfo describes one SIP listener of a realm.
type ListenerInfo struct {
	Realm     string `json:"realm"`
	Transport string `json:"transport"` // "udp", "tcp", "tls", "wss"
	// Bind is the address the socket is bound to: once started, the
	// kernel's port where the policy says port 0.
	Bind netip.AddrPort `json:"bind"`
	// Advertise is the host:port the SBC puts in Via and Contact of the
	// messages it sends on this realm and transport.
	Advertise string `json:"advertise"`
}

// Listeners returns the SIP listeners, by realm name, then in the policy's
// order. Before Start, Bind is the policy's address. It must not be called
// while s.mu is held.
func (s *SBC) Listeners() []ListenerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.realms))
	for n := range s.realms {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []ListenerInfo
	for _, n := range names {
		ep := s.realms[n]
		nth := map[string]int{} // listeners of each transport seen so far
		for _, l := range ep.cfg.Listeners {
			t := strings.ToLower(l.Transport)
			i := nth[t]
			nth[t]++
			info := ListenerInfo{Realm: n, Transport: t, Bind: l.BindAddr}
			// listen opens the sockets in policy order, one slice per
			// transport: the i-th of a transport is the i-th socket.
			var bound net.Addr
			switch {
			case t == "udp" && i < len(ep.udp):
				bound = ep.udp[i].LocalAddr()
			case t == "tcp" && i < len(ep.tcp):
				bound = ep.tcp[i].Addr()
			case t == "tls" && i < len(ep.tls):
				bound = ep.tls[i].Addr()
			case t == "wss" && i < len(ep.wss):
				bound = ep.wss[i].Addr()
			case i == 0:
				if a, ok := ep.laddr[t]; ok {
					info.Bind = a
				}
			}
			if bound != nil {
				if a, err := netip.ParseAddrPort(bound.String()); err == nil {
					info.Bind = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
				}
			}
			if f, ok := ep.faces[t]; ok {
				info.Advertise = net.JoinHostPort(f.Host, strconv.Itoa(f.Port))
			}
			out = append(out, info)
		}
	}
	return out
}
