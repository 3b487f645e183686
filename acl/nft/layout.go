package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Names of the objects in the table. They are part of the operator
// interface (doc.go) and of the restart adoption: change them only with a
// migration.
const (
	SetBlocked4    = "blocked4"     // ipv4_addr, flags timeout: single IPv4 addresses
	SetBlocked6    = "blocked6"     // ipv6_addr, flags timeout: single IPv6 addresses
	SetBlocked4Net = "blocked4_net" // ipv4_addr, flags interval,timeout: IPv4 prefixes
	SetBlocked6Net = "blocked6_net" // ipv6_addr, flags interval,timeout: IPv6 prefixes
	SetTrunks4     = "trunks4"      // ipv4_addr, flags interval: allow-list (trunks and backends)
	SetTrunks6     = "trunks6"      // ipv6_addr, flags interval: allow-list (trunks and backends)
	SetPorts       = "ports"        // inet_service, flags interval: SIP ports and media range
	SetSIPPorts    = "sip_ports"    // inet_service: SIP ports
	SetMediaUDP    = "media_udp"    // inet_service, flags interval: media relay ranges (UDP only)

	CounterBlocked  = "blocked"   // packets dropped because their source is blocked
	CounterNotTrunk = "not_trunk" // packets dropped by the TrunksOnly rule

	ChainHook  = "prerouting" // base chain: hook prerouting, priority raw (-300)
	ChainGuard = "guard"      // regular chain holding the drop rules
)

// Priority is the priority of the base chain: raw (-300), after
// defragmentation (-400) and before connection tracking (-200), so dropped
// packets never create conntrack entries.
const Priority = -300

const (
	// objrefCounter is NFT_OBJECT_COUNTER for expr.Objref.
	objrefCounter = 1
	// setComment marks every set as owned by the SBC.
	setComment = "managed by sbc (acl/nft); changes are overwritten"
)

// layout holds the set definitions of one table. Set IDs are chosen here,
// not by the library, whose ID counter is a global without a lock.
type layout struct {
	table                    *nftables.Table
	blocked4, blocked6       *nftables.Set
	blocked4Net, blocked6Net *nftables.Set
	trunks4, trunks6         *nftables.Set
	ports, sipPorts          *nftables.Set
	mediaUDP                 *nftables.Set
	hook, guard              *nftables.Chain
}

func newLayout(table string, maxEntries int, netTimeout bool) *layout {
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	set := func(id uint32, name string, key nftables.SetDatatype, interval, timeout bool, size int) *nftables.Set {
		return &nftables.Set{
			Table: t, ID: id, Name: name, KeyType: key,
			Interval: interval, HasTimeout: timeout, Size: uint32(size),
			KeyByteOrder: binaryutil.BigEndian, Comment: setComment,
		}
	}
	accept := nftables.ChainPolicyAccept
	prio := nftables.ChainPriority(Priority)
	return &layout{
		table:       t,
		blocked4:    set(1, SetBlocked4, nftables.TypeIPAddr, false, true, maxEntries),
		blocked6:    set(2, SetBlocked6, nftables.TypeIP6Addr, false, true, maxEntries),
		blocked4Net: set(3, SetBlocked4Net, nftables.TypeIPAddr, true, netTimeout, 0),
		blocked6Net: set(4, SetBlocked6Net, nftables.TypeIP6Addr, true, netTimeout, 0),
		trunks4:     set(5, SetTrunks4, nftables.TypeIPAddr, true, false, 0),
		trunks6:     set(6, SetTrunks6, nftables.TypeIP6Addr, true, false, 0),
		ports:       set(7, SetPorts, nftables.TypeInetService, true, false, 0),
		sipPorts:    set(8, SetSIPPorts, nftables.TypeInetService, false, false, 0),
		mediaUDP:    set(9, SetMediaUDP, nftables.TypeInetService, true, false, 0),
		hook:        &nftables.Chain{Name: ChainHook, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: &prio, Policy: &accept},
		guard:       &nftables.Chain{Name: ChainGuard, Table: t},
	}
}

func (l *layout) allSets() []*nftables.Set {
	return []*nftables.Set{l.blocked4, l.blocked6, l.blocked4Net, l.blocked6Net, l.trunks4, l.trunks6, l.ports, l.sipPorts, l.mediaUDP}
}

// familySets returns the address set and the interval set of a family.
func (l *layout) familySets(v4 bool) (addr, net *nftables.Set) {
	if v4 {
		return l.blocked4, l.blocked4Net
	}
	return l.blocked6, l.blocked6Net
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// create queues the whole table on c: sets (empty), counters with the given
// start values, both chains and their rules. The caller adds elements.
func (l *layout) create(c *nftables.Conn, trunksOnly bool, blocked, notTrunk nftables.CounterObj) error {
	c.AddTable(l.table)
	for _, s := range l.allSets() {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	blocked.Table, blocked.Name = l.table, CounterBlocked
	notTrunk.Table, notTrunk.Name = l.table, CounterNotTrunk
	c.AddObj(&blocked)
	c.AddObj(&notTrunk)
	c.AddChain(l.guard)
	c.AddChain(l.hook)

	// prerouting: meta l4proto udp|tcp th dport @ports jump guard
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		c.AddRule(&nftables.Rule{
			Table: l.table, Chain: l.hook,
			Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				dport(),
				lookup(l.ports, false),
				&expr.Verdict{Kind: expr.VerdictJump, Chain: l.guard.Name},
			},
			UserData: comment("sbc: guarded SIP and media ports"),
		})
	}
	// prerouting: meta l4proto udp udp dport @media_udp jump guard
	c.AddRule(&nftables.Rule{
		Table: l.table, Chain: l.hook,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			dport(),
			lookup(l.mediaUDP, false),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: l.guard.Name},
		},
		UserData: comment("sbc: guarded media relay ports (UDP)"),
	})
	// guard: drop blocked sources.
	for _, r := range []struct {
		v4  bool
		set *nftables.Set
	}{{true, l.blocked4}, {true, l.blocked4Net}, {false, l.blocked6}, {false, l.blocked6Net}} {
		ex := saddr(r.v4)
		ex = append(ex, lookup(r.set, false), &expr.Objref{Type: objrefCounter, Name: CounterBlocked}, &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: l.table, Chain: l.guard, Exprs: ex, UserData: comment("sbc: blocked source")})
	}
	if trunksOnly {
		for _, r := range []struct {
			v4  bool
			set *nftables.Set
		}{{true, l.trunks4}, {false, l.trunks6}} {
			ex := []expr.Any{dport(), lookup(l.sipPorts, false)}
			ex = append(ex, saddr(r.v4)...)
			ex = append(ex, lookup(r.set, true), &expr.Objref{Type: objrefCounter, Name: CounterNotTrunk}, &expr.Verdict{Kind: expr.VerdictDrop})
			c.AddRule(&nftables.Rule{Table: l.table, Chain: l.guard, Exprs: ex, UserData: comment("sbc: SIP from a source that is not a trunk")})
		}
	}
	return nil
}

// dport loads the transport header's destination port (th dport) into
// register 1; the rule before it ensured the protocol is UDP or TCP.
func dport() expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// saddr matches the network protocol and loads the source address into
// register 1 (ip saddr / ip6 saddr; in an inet table nft adds the same
// "meta nfproto" dependency).
func saddr(v4 bool) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if !v4 {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
	}
}

func lookup(s *nftables.Set, invert bool) expr.Any {
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}
}
