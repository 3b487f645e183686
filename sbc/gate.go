package sbc

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/policy"
)

// The gate for unknown sources: with headers.unknown_source_action =
// "drop" (the default), a source that is no trunk of a realm and no
// target of its pools can never get anything from the pipeline but a
// silent drop at classify. The gate drops it earlier, before sipgo
// parses or registers anything of it: each UDP datagram in the read
// filter (filter.go), each TCP connection at accept (endpoint.go). Counted
// as stage filter or accept, reason unknown_source, and charged like at
// classify. Over UDP nothing of such a source reaches sipgo, so none of
// its state (the per-source entries of its UDP connection pool, a
// stateless 400, a log line) grows with the number of spoofed sources.
//
// On tls and wss listeners the gate applies only where the realm has no
// trunk known by its certificate alone (tls_identities without sources):
// such a trunk may connect from anywhere, and the handshake tells it
// (cert_no_trunk refuses the others when client_auth asks for a
// certificate). With "reject", the gate is open and classify answers 403.

// A call is classified with the snapshot it started with (its in-dialog
// requests too), so the gate must let through what that snapshot knows
// even after a reload changed it (a trunk's sources, a pool's targets):
// it asks the snapshots that calls in progress still use as well
// (retired, kept by reload, pruned by snapshotLoop once no call uses
// them).

// realmGate is what the gate needs of one realm, from one snapshot.
type realmGate struct {
	drop bool // unknown sources are dropped (not answered 403)
	// A trunk of the realm has tls_identities: on tls and wss the
	// handshake and classify tell its connections (from outside its
	// sources: tls_identity_source), not the gate.
	identities bool
}

// buildGates derives the gates of every realm from p.
func buildGates(p *policy.Policy) map[string]*realmGate {
	out := make(map[string]*realmGate, len(p.Realms))
	for _, r := range p.Realms {
		out[r.Name] = &realmGate{drop: p.Headers.UnknownSourceAction != "reject"}
	}
	for _, t := range p.Trunks {
		if g := out[t.Realm]; g != nil && len(t.Identities) > 0 {
			g.identities = true
		}
	}
	return out
}

// unknown reports whether the gate drops src arriving on realm ep over
// transport ("udp", "tcp", "tls", "wss"): "" to pass, else the reason,
// and whether the source is charged for it. It mirrors classify without
// the certificate: a source of a trunk of the realm or a target of its
// pools passes (a trunk that requires a certificate, over a transport
// without one, or a trunk over a transport not in its transports, is
// dropped uncharged, as classify would), in the snapshot in force or in
// one a call in progress still uses. It does not allocate.
func (s *SBC) unknown(st *snapshot, ep *endpoint, src netip.Addr, transport string) (reason, bool) {
	r, charge := unknownIn(st, ep.name, src, transport)
	if r == "" {
		return "", false
	}
	if old := s.snaps.retired.Load(); old != nil {
		for _, o := range *old {
			if r, _ := unknownIn(o, ep.name, src, transport); r == "" {
				return "", false
			}
		}
	}
	return r, charge
}

func unknownIn(st *snapshot, realm string, src netip.Addr, transport string) (reason, bool) {
	g := st.gates[realm]
	if g == nil || !g.drop {
		return "", false
	}
	secure := transport == "tls" || transport == "wss"
	if secure && g.identities {
		return "", false
	}
	if name, ok := st.trunks.Lookup(src); ok {
		if tr := st.pol.Trunk(name); tr != nil && tr.Realm == realm {
			switch {
			case len(tr.Identities) > 0 && !secure:
				return reasonTLSNeedIdentity, false
			case !tr.OnTransport(transport):
				return reasonTrunkTransport, false // a forged datagram in the name of a TCP or TLS trunk
			}
			return "", false
		}
	}
	if st.targetOn[realmAddr{realm, src}] {
		return "", false
	}
	return reasonUnknownSource, true
}

// retire keeps a snapshot a reload replaced while calls may use it.
func (s *SBC) retire(old *snapshot) {
	s.snaps.mu.Lock()
	defer s.snaps.mu.Unlock()
	var list []*snapshot
	if cur := s.snaps.retired.Load(); cur != nil {
		list = append(list, *cur...)
	}
	list = append(list, old)
	s.snaps.retired.Store(&list)
}

// snapshotLoop forgets the retired snapshots no call uses any more.
func (s *SBC) snapshotLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.snaps.retired.Load() == nil {
			continue
		}
		used := map[*snapshot]bool{}
		s.calls.each(func(c *call) { used[c.st] = true })
		s.snaps.mu.Lock()
		var keep []*snapshot
		for _, o := range *s.snaps.retired.Load() {
			if used[o] {
				keep = append(keep, o)
			}
		}
		if len(keep) == 0 {
			s.snaps.retired.Store(nil)
		} else {
			s.snaps.retired.Store(&keep)
		}
		s.snaps.mu.Unlock()
	}
}

// retiredSnapshots are the snapshots calls in progress may still use
// (see retire); the zero value is empty.
type retiredSnapshots struct {
	retired atomic.Pointer[[]*snapshot]
	mu      sync.Mutex // serialises retire and the pruning
}
