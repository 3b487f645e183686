package sbc

import (
	"math/rand/v2"
	"net/netip"
	"sync"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// Stage 4, route: the policy maps (trunk, request-URI user) to a backend
// pool; the pool picks a healthy target by weight. Health (health.go) comes
// from OPTIONS pings (healthLoop) and from INVITE outcomes (a target that
// times out is skipped for the rest of that call).

// routeCall is stage 4 for a new call from a trunk: the pool of the route
// for its request-URI user, or the verdict when none matches.
func routeCall(st *snapshot, p peer, req *sip.Request) (*policy.Pool, verdict) {
	pc := st.pol.RouteFor(p.trunk.Name, req.Recipient.User)
	if pc == nil {
		return nil, answer(stageRoute, reasonNoRoute, 404, "Not Found").with("ruri_user", req.Recipient.User)
	}
	return pc, verdict{}
}

// pool is the runtime form of a policy pool.
type pool struct {
	cfg     *policy.Pool
	targets []*target
	weights []int
	prios   []int // the targets' priorities: the lowest available is tried first
	// binding: the one-target pool of a call to a registered user
	// (regcall.go): no health of its own.
	binding bool
	// hairpin: the one-target pool of an INVITE with Replaces sent to the
	// peer of the dialog it names (transfer.go): no health, no metrics.
	hairpin bool
}

// targetSet holds every target by pool and address, across reloads.
type targetSet struct {
	mu sync.Mutex
	m  map[string]*target // pool + "|" + addr
}

func (ts *targetSet) get(pool string, addr netip.AddrPort) *target {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.m == nil {
		ts.m = map[string]*target{}
	}
	k := pool + "|" + addr.String()
	t := ts.m[k]
	if t == nil {
		// A new target starts up: calls may flow before the first check.
		t = &target{pool: pool, addr: addr, up: true}
		ts.m[k] = t
	}
	return t
}

// prune forgets targets no longer in any pool.
func (ts *targetSet) prune(keep map[string]bool) []*target {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var gone []*target
	for k, t := range ts.m {
		if !keep[k] {
			gone = append(gone, t)
			delete(ts.m, k)
		}
	}
	return gone
}

func buildPools(p *policy.Policy, ts *targetSet) map[string]*pool {
	out := make(map[string]*pool, len(p.Pools))
	keep := map[string]bool{}
	for i := range p.Pools {
		pc := &p.Pools[i]
		pl := &pool{cfg: pc}
		for _, tc := range pc.Targets {
			pl.targets = append(pl.targets, ts.get(pc.Name, tc.Addr))
			pl.weights = append(pl.weights, tc.W)
			pl.prios = append(pl.prios, tc.Priority)
			keep[pc.Name+"|"+tc.Addr.String()] = true
		}
		out[pc.Name] = pl
	}
	ts.prune(keep)
	return out
}

// pick chooses a healthy target not yet tried: among those of the lowest
// priority, by weight. Returns nil when none is left.
func (p *pool) pick(tried map[*target]bool) *target {
	total, prio := 0, 0
	for i, t := range p.targets {
		if p.weights[i] <= 0 || tried[t] || !t.isUp() || t.drained.Load() {
			continue
		}
		switch pr := p.prio(i); {
		case total == 0 || pr < prio:
			total, prio = p.weights[i], pr
		case pr == prio:
			total += p.weights[i]
		}
	}
	if total == 0 {
		return nil
	}
	n := rand.IntN(total)
	for i, t := range p.targets {
		if p.weights[i] <= 0 || tried[t] || !t.isUp() || t.drained.Load() || p.prio(i) != prio {
			continue
		}
		if n < p.weights[i] {
			return t
		}
		n -= p.weights[i]
	}
	return nil
}

func (p *pool) prio(i int) int {
	if i < len(p.prios) {
		return p.prios[i]
	}
	return 0
}
