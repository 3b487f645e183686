package bench

import (
	"bytes"
	"slices"
	"time"
)

// LegLatency splits each call's INVITE→200 at the callee's side of a
// capture that holds both legs: Through is the server's passage of the
// INVITE (caller's INVITE → the server's INVITE to the callee), Callee
// the callee's answer (that INVITE → the callee's 200), Back the
// server's passage of the 200 (the callee's 200 → the 200 to the
// caller). First copies only; each slice sorted, one entry per call
// seen on both legs with both 200s.
type LegLatency struct {
	Through, Callee, Back []time.Duration
}

// LegLatencies reads a capture of both legs (datagrams from or to
// callerPort, from or to calleePort). A call's legs are paired by
// Call-ID where the server keeps it (a proxy), else by order: the n-th
// new Call-ID the caller sends an INVITE for with the n-th the callee
// gets one for (a B2BUA sets its calls up in the order their INVITEs
// came, which a server under no overload does; reordered set-ups blur
// the split, not the totals).
func LegLatencies(pkts []Packet, callerPort, calleePort uint16) LegLatency {
	type leg struct {
		order  []string
		invite map[string]time.Time
		ok     map[string]time.Time
	}
	a := leg{invite: map[string]time.Time{}, ok: map[string]time.Time{}}
	b := leg{invite: map[string]time.Time{}, ok: map[string]time.Time{}}
	for _, p := range pkts {
		var l *leg
		var request bool
		switch {
		case p.SrcPort == callerPort:
			l, request = &a, true
		case p.DstPort == callerPort:
			l = &a
		case p.DstPort == calleePort:
			l, request = &b, true
		case p.SrcPort == calleePort:
			l = &b
		default:
			continue
		}
		id, method, ok := sipCallIDCSeq(p.Payload)
		if !ok || !bytes.Equal(method, []byte("INVITE")) {
			continue
		}
		switch {
		case request && bytes.HasPrefix(p.Payload, []byte("INVITE ")):
			if _, seen := l.invite[string(id)]; !seen {
				l.invite[string(id)] = p.Time
				l.order = append(l.order, string(id))
			}
		case !request && bytes.HasPrefix(p.Payload, []byte("SIP/2.0 200 ")):
			if _, seen := l.ok[string(id)]; !seen {
				l.ok[string(id)] = p.Time
			}
		}
	}
	proxy := false
	for _, id := range a.order {
		if _, ok := b.invite[id]; ok {
			proxy = true
			break
		}
	}
	var res LegLatency
	for i, id := range a.order {
		bid := id
		if !proxy {
			if i >= len(b.order) {
				break
			}
			bid = b.order[i]
		}
		ainv, aok := a.invite[id], a.ok[id]
		binv, bok := b.invite[bid], b.ok[bid]
		if aok.IsZero() || binv.IsZero() || bok.IsZero() {
			continue
		}
		res.Through = append(res.Through, binv.Sub(ainv))
		res.Callee = append(res.Callee, bok.Sub(binv))
		res.Back = append(res.Back, aok.Sub(bok))
	}
	slices.Sort(res.Through)
	slices.Sort(res.Callee)
	slices.Sort(res.Back)
	return res
}
