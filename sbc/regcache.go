package sbc

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// The registration cache: the devices registered through the SBC (trunks
// with allow_register), one binding per device Contact. Each binding is
// registered at the registrar as a Contact of its own on the SBC's
// internal face, sip:TOKEN@face, where TOKEN is an opaque, unguessable
// name of the binding (bindingToken): the registrar forks to every
// device of an AoR and never learns a device's address; a call to
// sip:TOKEN@face goes out over the device's own flow (regcall.go).
//
// The cache lives in memory. After a restart it is rebuilt as devices
// re-register: connection-bound bindings could not be reused anyway (their
// connection is gone), and a UDP device refreshing from the same Call-ID
// and address gets the same token again when server.state_dir keeps the
// token key (regKeyFile), so the registrar's binding is refreshed rather
// than duplicated. Until the device's next refresh, a call to its token is
// answered 404 (reason user_unknown).

// binding is one device Contact of an address-of-record.
type binding struct {
	token     string
	aor       string // aorKey of the To URI
	realm     string // the realm the device registered on
	trunk     string
	transport string         // udp, tcp, tls, wss
	src       netip.AddrPort // the flow: the source of its REGISTER
	contact   sip.Uri        // the device's own Contact URI
	instance  string         // +sip.instance (RFC 5626), as sent; "" if none
	regID     string         // reg-id, as sent
	callID    string         // the device's REGISTER Call-ID
	cseq      uint32         // the CSeq of its last REGISTER
	expires   time.Time      // as granted by the registrar
	// unreachable: the connection the device registered over is closed
	// (TCP, TLS, WSS); calls to it get 480 until it registers again.
	unreachable bool
}

// regCache holds the bindings by token and by AoR. Its bounds are the
// policy's (registrations.max_bindings, max_bindings_per_aor), read per
// REGISTER.
type regCache struct {
	mu      sync.Mutex
	key     []byte
	byToken map[string]*binding
	byAoR   map[string]map[string]*binding
	// byFlow holds the bindings of each connection flow (TCP, TLS,
	// WSS): a connection that carries a binding is kept open past
	// server.tcp_idle_timeout (holdsFlow).
	byFlow map[flowKey]map[*binding]struct{}
	// pending holds the tokens reserved by REGISTERs waiting for the
	// registrar, each with the number of REGISTERs holding it: a device
	// that sends again (its credentials after a 401) while its first
	// REGISTER still holds a reservation needs no second room.
	pending map[string]int
	// count, when set, is told each binding added (+1) or removed (-1),
	// by realm: the sbc_registrations gauge.
	count func(realm string, delta float64)
}

func newRegCache(key []byte) *regCache {
	if len(key) == 0 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	return &regCache{key: key, byToken: map[string]*binding{}, byAoR: map[string]map[string]*binding{}, byFlow: map[flowKey]map[*binding]struct{}{}, pending: map[string]int{}}
}

// flowKey names a device's connection: realm, transport, its address.
type flowKey struct {
	realm, transport string
	src              netip.AddrPort
}

func (b *binding) flow() (flowKey, bool) {
	return flowKey{b.realm, b.transport, b.src}, b.transport != "udp"
}

// holdsFlow reports whether a binding not yet expired at now was
// registered over the connection (realm, transport, src): the SBC keeps
// such a connection open while it is idle, since the device can be
// called only over it (RFC 5626 3.3: the flow is the way back to it).
func (rc *regCache) holdsFlow(realm, transport string, src netip.AddrPort, now time.Time) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for b := range rc.byFlow[flowKey{realm, transport, src}] {
		if now.Before(b.expires) {
			return true
		}
	}
	return false
}

// tokenPrefix starts every binding token: a request-URI user without it
// is no binding's.
const tokenPrefix = "rb"

// tokenLen is the length of a token: the prefix and 24 base32 characters
// (120 bits of an HMAC-SHA256).
const tokenLen = len(tokenPrefix) + 24

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// bindingToken is the token of a device's binding: an HMAC under the
// cache's key of the realm, the AoR and what identifies the device
// (deviceKey). The same device refreshing gets the same token; nobody
// without the key can name another's.
func (rc *regCache) bindingToken(realm, aor, device string) string {
	m := hmac.New(sha256.New, rc.key)
	m.Write([]byte(realm))
	m.Write([]byte{0})
	m.Write([]byte(aor))
	m.Write([]byte{0})
	m.Write([]byte(device))
	sum := m.Sum(nil)
	return tokenPrefix + tokenEncoding.EncodeToString(sum[:15])
}

// deviceKey names a device Contact: its RFC 5626 instance and reg-id when
// it sent them (stable across Call-IDs, addresses and restarts of the
// device), else its REGISTER Call-ID, source address and Contact URI
// (RFC 3261 10.2.4: a UA refreshes with the same Call-ID). The source
// port is left out: a NAT that rebinds the device's UDP port, or a TCP
// device that reconnects, keeps its binding, whose flow then moves to the
// new port.
func deviceKey(instance, regID, callID string, src netip.AddrPort, contact string) string {
	if instance != "" {
		return "i\x00" + instance + "\x00" + regID
	}
	return "c\x00" + callID + "\x00" + src.Addr().Unmap().String() + "\x00" + contact
}

// isToken reports whether user has the shape of a binding token.
func isToken(user string) bool {
	if len(user) != tokenLen || !strings.HasPrefix(user, tokenPrefix) {
		return false
	}
	for i := len(tokenPrefix); i < len(user); i++ {
		c := user[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// aorKey is the cache's key of an address-of-record: user@host, the host
// lower-cased (RFC 3261 10.3 step 5 compares AoRs as URIs: the user part
// is case-sensitive).
func aorKey(u sip.Uri) string {
	return u.User + "@" + strings.ToLower(strings.Trim(u.Host, "[]"))
}

// reserve makes room for the tokens of one REGISTER not yet in the cache:
// false when the cache (maxAll) or the AoR (maxAoR) would hold too many.
// The room is held until release is called (after the registrar's answer
// was applied).
func (rc *regCache) reserve(aor string, tokens []string, maxAll, maxAoR int) (release func(), ok bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var held []string
	n := 0
	for _, t := range tokens {
		if rc.byToken[t] != nil {
			continue
		}
		held = append(held, t)
		if rc.pending[t] == 0 {
			n++
		}
	}
	if len(held) == 0 {
		return func() {}, true
	}
	if len(rc.byToken)+len(rc.pending)+n > maxAll || len(rc.byAoR[aor])+len(held) > maxAoR {
		return nil, false
	}
	for _, t := range held {
		rc.pending[t]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			rc.mu.Lock()
			for _, t := range held {
				if rc.pending[t]--; rc.pending[t] <= 0 {
					delete(rc.pending, t)
				}
			}
			rc.mu.Unlock()
		})
	}, true
}

// put adds or replaces the binding of b.token.
func (rc *regCache) put(b *binding) {
	rc.mu.Lock()
	old := rc.byToken[b.token]
	if old != nil {
		rc.unlink(old)
	}
	rc.byToken[b.token] = b
	m := rc.byAoR[b.aor]
	if m == nil {
		m = map[string]*binding{}
		rc.byAoR[b.aor] = m
	}
	m[b.token] = b
	if k, ok := b.flow(); ok {
		f := rc.byFlow[k]
		if f == nil {
			f = map[*binding]struct{}{}
			rc.byFlow[k] = f
		}
		f[b] = struct{}{}
	}
	rc.mu.Unlock()
	if old != nil {
		rc.counted(old.realm, -1)
	}
	rc.counted(b.realm, 1)
}

// unlink removes b from both maps. Under mu.
func (rc *regCache) unlink(b *binding) {
	delete(rc.byToken, b.token)
	if k, ok := b.flow(); ok {
		delete(rc.byFlow[k], b)
		if len(rc.byFlow[k]) == 0 {
			delete(rc.byFlow, k)
		}
	}
	if m := rc.byAoR[b.aor]; m != nil {
		delete(m, b.token)
		if len(m) == 0 {
			delete(rc.byAoR, b.aor)
		}
	}
}

func (rc *regCache) counted(realm string, d float64) {
	if rc.count != nil {
		rc.count(realm, d)
	}
}

// remove forgets the binding of token; false if there was none.
func (rc *regCache) remove(token string) bool {
	rc.mu.Lock()
	b := rc.byToken[token]
	if b != nil {
		rc.unlink(b)
	}
	rc.mu.Unlock()
	if b != nil {
		rc.counted(b.realm, -1)
	}
	return b != nil
}

// removeAoR forgets every binding of aor (Contact: *); it returns how many.
func (rc *regCache) removeAoR(aor string) int {
	rc.mu.Lock()
	var gone []*binding
	for _, b := range rc.byAoR[aor] {
		gone = append(gone, b)
	}
	for _, b := range gone {
		rc.unlink(b)
	}
	rc.mu.Unlock()
	for _, b := range gone {
		rc.counted(b.realm, -1)
	}
	return len(gone)
}

// get returns a copy of the binding of token.
func (rc *regCache) get(token string) (binding, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b := rc.byToken[token]
	if b == nil {
		return binding{}, false
	}
	return *b, true
}

// ofAoR returns copies of aor's bindings.
func (rc *regCache) ofAoR(aor string) []binding {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]binding, 0, len(rc.byAoR[aor]))
	for _, b := range rc.byAoR[aor] {
		out = append(out, *b)
	}
	return out
}

// len returns the number of bindings.
func (rc *regCache) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.byToken)
}

// sweep forgets the bindings expired at now, and marks unreachable those
// whose connection down says is closed. It returns how many it removed.
func (rc *regCache) sweep(now time.Time, down func(binding) bool) int {
	rc.mu.Lock()
	var gone, check []*binding
	for _, b := range rc.byToken {
		switch {
		case !now.Before(b.expires):
			gone = append(gone, b)
		case b.transport != "udp" && !b.unreachable:
			check = append(check, b)
		}
	}
	for _, b := range gone {
		rc.unlink(b)
	}
	rc.mu.Unlock()
	for _, b := range gone {
		rc.counted(b.realm, -1)
	}
	// The connection check calls into sipgo: outside the lock, on copies.
	for _, b := range check {
		if down != nil && down(*b) {
			rc.mu.Lock()
			if cur := rc.byToken[b.token]; cur == b {
				cur.unreachable = true
			}
			rc.mu.Unlock()
		}
	}
	return len(gone)
}

// absorb is a refresh answered without the registrar
// (registrations.client_expires_max): the binding of token, if the
// REGISTER comes from its flow (src, transport) with its Call-ID and
// Contact and a higher CSeq, and the registrar's binding has more than
// keep to live at now. The binding then remembers cseq.
func (rc *regCache) absorb(token string, src netip.AddrPort, transport, callID, contact string, cseq uint32, now time.Time, keep time.Duration) (binding, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b := rc.byToken[token]
	if b == nil || b.src != src || b.transport != transport || b.callID != callID || cseq <= b.cseq ||
		b.unreachable || b.contact.String() != contact || b.expires.Sub(now) <= keep {
		return binding{}, false
	}
	b.cseq = cseq
	return *b, true
}

// udpFlows returns copies of the bindings over UDP (the keep-alive pings'
// targets).
func (rc *regCache) udpFlows() []binding {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []binding
	for _, b := range rc.byToken {
		if b.transport == "udp" {
			out = append(out, *b)
		}
	}
	return out
}
