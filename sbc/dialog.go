package sbc

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// In-dialog traffic: every request inside an established (or early) call
// is received on one leg and re-originated on the other, with that leg's
// Call-ID, tags, CSeq, route set and the SBC's Contact; responses come back
// the same way. Nothing of one leg's dialog identifiers crosses to the
// other. The relaying itself is part of the call's state machine
// (call_fsm.go: onRequest, onRelayResponse, onAck, onBye).

// findDialog matches an in-dialog request (or ACK) to its call and leg by
// Call-ID and the SBC's tag on that leg.
func (s *SBC) findDialog(req *sip.Request) (*call, *leg) {
	if req.To() == nil || req.CallID() == nil {
		return nil, nil
	}
	return s.calls.get(req.CallID().Value(), tagOf(req.To().Params))
}

// findTomb matches an in-dialog request (or ACK) to the tomb of an ended
// call's dialog (tomb.go).
func (s *SBC) findTomb(req *sip.Request) *tomb {
	if req.To() == nil || req.CallID() == nil {
		return nil
	}
	return s.calls.tomb(req.CallID().Value(), tagOf(req.To().Params))
}

// inDialog dispatches a request carrying a To tag, already matched to its
// call (c may be nil: no such dialog).
func (s *SBC) inDialog(ep *endpoint, p peer, c *call, from *leg, req *sip.Request, tx sip.ServerTransaction) {
	if c == nil || from.ep != ep {
		s.act(ep, p, req, tx, answer(stageDialog, reasonNoDialog, 481, "Call/Transaction Does Not Exist"))
		return
	}
	if !c.sentBy(from, p) {
		s.act(ep, p, req, tx, answer(stageDialog, reasonNotDialogPeer, 481, "Call/Transaction Does Not Exist"))
		return
	}
	if c.done.Load() && req.Method != sip.BYE {
		// Lingering dialog of an ended call: not a stray, just late. An
		// answer, not a drop.
		s.reject(ep, req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	if !from.checkCSeq(req.CSeq().SeqNo, req.Method) {
		s.act(ep, p, req, tx, answer(stageDialog, reasonCSeqOutOfOrder, 500, "Server Internal Error",
			sip.NewHeader("Retry-After", "1")))
		return
	}
	c.touch()
	kind := evRequest
	if req.Method == sip.BYE {
		kind = evBye
	}
	sent := make(chan struct{})
	ev := event{kind: kind, leg: from, req: req, tx: tx, sent: sent}
	if req.Method == sip.REFER {
		// A Replaces in Refer-To may name another call: mapped here, with
		// no call's lock held (transfer.go).
		ev.replaces = s.referReplaces(req)
	}
	// Relay ports for the m= lines a re-offer adds, bound here: the
	// transition touches no socket (media.go).
	ev.spare = s.preallocLines(c, from, req)
	if ep.detach(req, tx) {
		// In a UDP read loop: the handler returns now, and the final
		// response's action ends the transaction (endDetached; a BYE's at
		// once, as below).
		c.post(ev)
		return
	}
	c.post(ev)
	// sipgo ends the server transaction when this handler returns: wait
	// until its final response is out.
	<-sent
	if kind == evBye {
		// The BYE ended the call: its tomb answers a retransmission with
		// 200 as the transaction would, without sipgo keeping the parsed
		// BYE and its 200 for 64*T1 (Timer J).
		tx.Terminate()
	}
}

// onAck routes an ACK for a 2xx from p to its call.
func (s *SBC) onAck(ep *endpoint, p peer, c *call, from *leg, req *sip.Request) {
	if req.CSeq() == nil {
		s.act(ep, p, req, nil, silent(stageDialog, reasonBadACK))
		return
	}
	if c == nil || from.ep != ep {
		s.act(ep, p, req, nil, silent(stageDialog, reasonStrayACK))
		return
	}
	if !c.sentBy(from, p) {
		s.act(ep, p, req, nil, silent(stageDialog, reasonNotDialogPeer))
		return
	}
	c.touch()
	c.post(event{kind: evAck, leg: from, req: req})
}

// sentBy reports whether p may speak for leg `from` of the call: the A-leg
// belongs to the call's trunk, a B-leg to a backend (both as classified
// with the call's snapshot). Knowing a dialog's identifiers is not enough
// to end or change another carrier's call.
func (c *call) sentBy(from *leg, p peer) bool {
	if from.placed {
		// A transfer's new leg (transfer.go): its peer, or a backend.
		return p.backend || p.src.Addr().Unmap() == from.peer.Addr()
	}
	c.mu.Lock()
	isA := from == c.a // a local transfer may change the A-leg (transfer.go)
	c.mu.Unlock()
	if isA {
		if c.trunk == nil {
			// An outbound call: the caller is a target of its pool.
			return p.backend && p.pool == c.srcPool
		}
		return p.trunk != nil && p.trunk.Name == c.trunk.Name
	}
	// A carrier's address may also be a trunk's (its calls in): the
	// leg's own peer address is its peer either way.
	return p.backend || p.src.Addr().Unmap() == from.peer.Addr()
}

// mapReplaces maps a Replaces header value (RFC 3891) naming one leg of a
// call through the SBC, by the SBC's own tag as the to-tag, to the same
// call's other leg, as the peer on that side knows it (the SBC's tag
// there is the from-tag). ok is false when no such dialog exists.
func (s *SBC) mapReplaces(v string) (string, bool) {
	callID, toTag, fromTag, rest := parseReplaces(v)
	if callID == "" || toTag == "" {
		return "", false
	}
	c, l := s.calls.get(callID, toTag)
	if c == nil || c.done.Load() || l.getRemoteTag() != fromTag {
		return "", false
	}
	c.mu.Lock()
	o := c.other(l)
	c.mu.Unlock()
	if o == nil || !o.hasRemote() {
		return "", false
	}
	return replacesValue(o.callID, o.getRemoteTag(), o.localTag, rest), true
}

// callTable finds calls by (Call-ID, local tag) of either leg, and the
// tombs of ended calls' dialogs (tomb.go) for lingerFor after their end.
type callTable struct {
	mu sync.RWMutex
	m  map[string]legRef
	// ids maps the Call-ID of every live leg in m to its call's A-leg
	// Call-ID: the correlation id of both legs in the HEP export, and how
	// a retransmitted INVITE of a call is recognised once its server
	// transaction is gone (isALeg).
	ids map[string]string
	// invites holds the top Via branch of each live caller's INVITE, by
	// its Call-ID: a retransmission carries the same branch; a fork of
	// the same request by a proxy upstream (the registrar forking to two
	// devices' contacts on the SBC) has the same Call-ID but its own
	// branch, and is a call of its own.
	invites map[string][]string
	// dead holds the tombs, with their Call-IDs' correlation ids and
	// branches (tombstore.go); sweep forgets them when due.
	dead       tombStore
	sweepTimer *time.Timer
	sweepArmed bool
}

// legRef is an entry of the table: a live call's leg, or (c nil) the
// tomb of an ended call's dialog.
type legRef struct {
	c *call
	l *leg
	t *tomb
}

func newCallTable() *callTable {
	return &callTable{m: map[string]legRef{}, ids: map[string]string{}, invites: map[string][]string{}, dead: newTombStore()}
}

func dialogKey(callID, localTag string) string {
	var b strings.Builder
	b.Grow(len(callID) + len(localTag) + 1)
	b.WriteString(callID)
	b.WriteByte(0)
	b.WriteString(localTag)
	return b.String()
}

func (t *callTable) put(l *leg, c *call) {
	t.mu.Lock()
	t.m[dialogKey(l.callID, l.localTag)] = legRef{c: c, l: l}
	t.ids[l.callID] = c.a.callID
	t.mu.Unlock()
}

// putCaller enters a caller's leg, and its INVITE's branch.
func (t *callTable) putCaller(c *call, branch string) {
	t.mu.Lock()
	t.m[dialogKey(c.a.callID, c.a.localTag)] = legRef{c: c, l: c.a}
	t.ids[c.a.callID] = c.a.callID
	if _, ok := t.invites[c.a.callID]; !ok {
		// Another fork of this Call-ID may be buried already: its
		// branches (its siblings' included) stay known with the new one.
		if bs, ok := t.dead.branches(c.a.callID); ok && len(bs) > 0 {
			t.invites[c.a.callID] = bs
		}
	}
	if branch != "" && len(t.invites[c.a.callID]) < maxForksPerCallID {
		t.invites[c.a.callID] = append(t.invites[c.a.callID], branch)
	}
	t.mu.Unlock()
}

// maxForksPerCallID bounds the branches remembered per Call-ID.
const maxForksPerCallID = 16

// bury replaces dialogs' entries by their tombs, forgotten after linger:
// each Call-ID's correlation id and INVITE branches go with them.
func (t *callTable) bury(tombs []*tomb, linger time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	due := tombClock() + int64(linger)
	for _, tb := range tombs {
		callID := tombCallID(tb.key)
		// INVITE branches matter for an A leg's record only
		// (tombStore.branches): a B leg's Call-ID is not looked up.
		var branches []string
		if tb.a {
			branches = t.branchesLocked(callID)
		}
		t.dead.add(tb, t.corrLocked(callID), branches, due)
	}
	// The live entries go once every tomb of the batch has what they
	// held (two branches may share a dialog, and so a Call-ID).
	for _, tb := range tombs {
		callID := tombCallID(tb.key)
		delete(t.m, tb.key)
		delete(t.ids, callID)
		delete(t.invites, callID)
	}
	if !t.sweepArmed {
		t.armLocked(linger + sweepSlack(linger))
	}
}

// sweepSlack is how much later than its time a tomb may go: a sweep per
// sweepSlack at most, however many calls end.
func sweepSlack(linger time.Duration) time.Duration {
	return min(max(linger/64, time.Millisecond), 250*time.Millisecond)
}

// sweepBatch bounds the tombs one hold of the table's lock forgets.
const sweepBatch = 1024

// armLocked sets the sweep timer to run after d. Under t.mu.
func (t *callTable) armLocked(d time.Duration) {
	t.sweepArmed = true
	if t.sweepTimer == nil {
		t.sweepTimer = time.AfterFunc(d, t.sweep)
		return
	}
	t.sweepTimer.Reset(d)
}

// sweep forgets the tombs that are due, a batch per hold of the lock,
// and sets the timer for the next. One timer for the whole table: a
// per-call timer kept 64*T1 × calls/s runtime timers pending (32,000 at
// 1,000 calls/s), and every timer of the process paid for that heap's
// depth. Should lingerFor shrink (tests), a tomb buried after it did
// waits behind the older ones, at most the older linger.
func (t *callTable) sweep() {
	for {
		now := tombClock()
		t.mu.Lock()
		n, next, ok := t.dead.expire(now, sweepBatch)
		if n == sweepBatch {
			t.mu.Unlock()
			continue
		}
		if !ok {
			t.sweepArmed = false
		} else {
			t.armLocked(time.Duration(next-now) + sweepSlack(time.Duration(lingerFor.Load())))
		}
		t.mu.Unlock()
		return
	}
}

// corrLocked is correlation under t.mu.
func (t *callTable) corrLocked(callID string) string {
	if a, ok := t.ids[callID]; ok {
		return a
	}
	if a, ok := t.dead.corr(callID); ok {
		return a
	}
	return callID
}

// branchesLocked returns the INVITE branches known for an A-leg Call-ID.
// Under t.mu.
func (t *callTable) branchesLocked(callID string) []string {
	if bs, ok := t.invites[callID]; ok {
		return bs
	}
	bs, _ := t.dead.branches(callID)
	return bs
}

// get finds a live call's leg.
func (t *callTable) get(callID, localTag string) (*call, *leg) {
	r := t.lookup(callID, localTag)
	return r.c, r.l
}

// lookup finds a dialog, live or buried.
func (t *callTable) lookup(callID, localTag string) legRef {
	if localTag == "" {
		return legRef{}
	}
	key := dialogKey(callID, localTag)
	t.mu.RLock()
	defer t.mu.RUnlock()
	if r, ok := t.m[key]; ok {
		return r
	}
	return legRef{t: t.dead.tomb(key)}
}

// tomb finds the tomb of an ended call's dialog (nil: none).
func (t *callTable) tomb(callID, localTag string) *tomb {
	return t.lookup(callID, localTag).t
}

// isALeg reports whether an INVITE without To tag with this Call-ID and
// top Via branch is a retransmission of the INVITE of a call live or
// lingering. The same Call-ID with another branch is not (a fork).
func (t *callTable) isALeg(callID, branch string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if a, ok := t.ids[callID]; ok {
		if a != callID {
			return false
		}
		bs, ok := t.invites[callID]
		return !ok || slices.Contains(bs, branch) // no branch known: by Call-ID alone
	}
	bs, ok := t.dead.branches(callID)
	return ok && (len(bs) == 0 || slices.Contains(bs, branch))
}

// correlation returns the A-leg Call-ID of the call that has a leg with
// Call-ID callID; callID itself when none has (an A leg's own, a message
// outside calls).
func (t *callTable) correlation(callID string) string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.corrLocked(callID)
}

// len returns the number of distinct calls not yet ended.
func (t *callTable) len() int {
	n := 0
	t.each(func(*call) { n++ })
	return n
}

// entries is the number of dialogs in the table, lingering ones included.
func (t *callTable) entries() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m) + t.dead.len()
}

// tombs is the number of buried dialogs in the table.
func (t *callTable) tombs() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.dead.len()
}

// each calls f once for every distinct call not yet ended, outside the
// table's lock.
func (t *callTable) each(f func(*call)) {
	t.mu.RLock()
	seen := map[*call]bool{}
	var list []*call
	for _, r := range t.m {
		if r.c != nil && !seen[r.c] && !r.c.done.Load() {
			seen[r.c] = true
			list = append(list, r.c)
		}
	}
	t.mu.RUnlock()
	for _, c := range list {
		f(c)
	}
}
