package srtp

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	pion "github.com/pion/srtp/v3"
)

// Transform is what a leg does to packets on the wire: Inbound turns a
// packet received from the leg's remote into plain RTP/RTCP, Outbound turns
// plain RTP/RTCP into what the leg's remote expects.
//
// Each method may write its result into dst (which has len 0 and enough
// capacity for the packet plus 64 bytes of trailer) and may work in place:
// dst and pkt can share their backing array. It returns the result, which
// may be pkt itself. It must not keep dst or pkt after returning, and must
// not allocate on the success path.
//
// Concurrency: the stream calls InboundRTP, InboundRTCP, OutboundRTP and
// OutboundRTCP each from one goroutine at a time, but the four may run in
// parallel with each other (different reader goroutines), and the owner may
// call methods of its own (rekeying) meanwhile.
//
// A transform that has no keys yet (DTLS-SRTP before the handshake
// completes) returns ErrNotReady: the packet is dropped and counted as
// "not_ready", not as an error (pitfall 9 in the notes).
type Transform interface {
	InboundRTP(dst, pkt []byte) ([]byte, error)
	InboundRTCP(dst, pkt []byte) ([]byte, error)
	OutboundRTP(dst, pkt []byte) ([]byte, error)
	OutboundRTCP(dst, pkt []byte) ([]byte, error)
}

// ErrNotReady is returned by a transform that cannot protect or unprotect
// packets yet.
var ErrNotReady = errors.New("srtp: transform has no keys yet")

// Plain is the identity transform: plain RTP/AVP on the wire.
type Plain struct{}

// InboundRTP returns pkt.
func (Plain) InboundRTP(_, pkt []byte) ([]byte, error) { return pkt, nil }

// InboundRTCP returns pkt.
func (Plain) InboundRTCP(_, pkt []byte) ([]byte, error) { return pkt, nil }

// OutboundRTP returns pkt.
func (Plain) OutboundRTP(_, pkt []byte) ([]byte, error) { return pkt, nil }

// OutboundRTCP returns pkt.
func (Plain) OutboundRTCP(_, pkt []byte) ([]byte, error) { return pkt, nil }

// NotReady is a transform that refuses every packet with ErrNotReady: the
// placeholder for a leg whose keys come later (DTLS-SRTP), to be replaced
// with Stream.SetTransform.
type NotReady struct{}

// InboundRTP returns ErrNotReady.
func (NotReady) InboundRTP(_, _ []byte) ([]byte, error) { return nil, ErrNotReady }

// InboundRTCP returns ErrNotReady.
func (NotReady) InboundRTCP(_, _ []byte) ([]byte, error) { return nil, ErrNotReady }

// OutboundRTP returns ErrNotReady.
func (NotReady) OutboundRTP(_, _ []byte) ([]byte, error) { return nil, ErrNotReady }

// OutboundRTCP returns ErrNotReady.
func (NotReady) OutboundRTCP(_, _ []byte) ([]byte, error) { return nil, ErrNotReady }

// ReplayWindow is the replay window of every decrypt context (RFC 3711
// §3.3.2 minimum).
const ReplayWindow = 64

// SRTPKeys is one direction's master key material, whatever set it up
// (SDES a=crypto or a DTLS exporter).
type SRTPKeys struct {
	Profile   pion.ProtectionProfile
	Key, Salt []byte
	// MKI, when not empty, is carried in every packet (RFC 3711 §3.1).
	MKI []byte
	// More are further MKI-tagged keys accepted on decrypt (SDES lines
	// with several keys); they need MKI.
	More []MKIKey
	// Session parameters (RFC 4568 §6.3.2–6.3.4).
	UnencryptedSRTP, UnencryptedSRTCP, UnauthenticatedSRTP bool
}

// MKIKey is an additional master key selected by its MKI.
type MKIKey struct{ MKI, Key, Salt []byte }

// KeysFromCrypto converts a parsed a=crypto line into SRTPKeys.
func KeysFromCrypto(c Crypto) (SRTPKeys, error) {
	if !c.Suite.Valid() || len(c.Keys) == 0 {
		return SRTPKeys{}, fmt.Errorf("%w: empty or unknown line", ErrMalformedCrypto)
	}
	k := SRTPKeys{
		Profile: c.Suite.Profile(), Key: c.Keys[0].Key, Salt: c.Keys[0].Salt, MKI: c.Keys[0].mkiBytes(),
		UnencryptedSRTP: c.UnencryptedSRTP, UnencryptedSRTCP: c.UnencryptedSRTCP, UnauthenticatedSRTP: c.UnauthenticatedSRTP,
	}
	for _, more := range c.Keys[1:] {
		k.More = append(k.More, MKIKey{MKI: more.mkiBytes(), Key: more.Key, Salt: more.Salt})
	}
	return k, nil
}

// KeysFromDTLS derives both directions' keys from a completed DTLS-SRTP
// handshake (RFC 5764 §4.2): the seam for the DTLS layer, which passes its
// connection state (pion/dtls v3 and v4 State satisfy
// pion.KeyingMaterialExporter), the negotiated profile and its role.
// NewSRTP(local, remote) then gives the leg's transform, installed with
// Stream.SetTransform.
func KeysFromDTLS(exp pion.KeyingMaterialExporter, profile pion.ProtectionProfile, isClient bool) (local, remote SRTPKeys, err error) {
	cfg := pion.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(exp, isClient); err != nil {
		return SRTPKeys{}, SRTPKeys{}, fmt.Errorf("srtp: DTLS keys: %w", err)
	}
	local = SRTPKeys{Profile: profile, Key: cfg.Keys.LocalMasterKey, Salt: cfg.Keys.LocalMasterSalt}
	remote = SRTPKeys{Profile: profile, Key: cfg.Keys.RemoteMasterKey, Salt: cfg.Keys.RemoteMasterSalt}
	return local, remote, nil
}

func (k SRTPKeys) options() []pion.ContextOption {
	var o []pion.ContextOption
	if k.UnencryptedSRTP {
		o = append(o, pion.SRTPNoEncryption())
	}
	if k.UnencryptedSRTCP {
		o = append(o, pion.SRTCPNoEncryption())
	}
	if k.UnauthenticatedSRTP {
		o = append(o, pion.SRTPAuthenticationTagLength(0))
	}
	if len(k.MKI) > 0 {
		o = append(o, pion.MasterKeyIndicator(k.MKI))
	}
	return o
}

func sameKeys(a, b SRTPKeys) bool {
	if a.Profile != b.Profile || string(a.Key) != string(b.Key) || string(a.Salt) != string(b.Salt) ||
		string(a.MKI) != string(b.MKI) || len(a.More) != len(b.More) ||
		a.UnencryptedSRTP != b.UnencryptedSRTP || a.UnencryptedSRTCP != b.UnencryptedSRTCP ||
		a.UnauthenticatedSRTP != b.UnauthenticatedSRTP {
		return false
	}
	for i := range a.More {
		x, y := a.More[i], b.More[i]
		if string(x.MKI) != string(y.MKI) || string(x.Key) != string(y.Key) || string(x.Salt) != string(y.Salt) {
			return false
		}
	}
	return true
}

// srtpDir is one pion context with the lock and header it is used with.
type srtpDir struct {
	mu   sync.Mutex
	ctx  *pion.Context
	keys SRTPKeys
	hdr  rtp.Header
	rhdr rtcp.Header
	// lastSSRC is the last SSRC this context handled successfully, whose
	// ROC (RTP) or index (RTCP) a rekey carries over.
	lastSSRC uint32
	seen     bool
	// prev is a decrypt context a rekey replaced, tried when the current
	// one fails a packet's tag until prevUntil (unix ns): what the peer
	// sent with its old key before it learnt the new one (see
	// RekeyGrace). scratch holds a copy of the packet meanwhile, since
	// an in-place decrypt that fails may have overwritten it.
	prev      *pion.Context
	prevUntil int64
	scratch   []byte
}

// SRTP is a Transform that protects with one pion context per direction
// and per packet kind (so RTP and RTCP readers never share one), with
// replay protection (window 64) on both decrypt contexts.
//
// Forged packets (bad tag) fail before any per-SSRC state is stored
// (pion/srtp v3 commits state only after authentication).
type SRTP struct {
	inRTP, inRTCP, outRTP, outRTCP srtpDir
}

// NewSRTP builds a transform that decrypts what the remote sends with
// remote and encrypts what we send with local.
func NewSRTP(local, remote SRTPKeys) (*SRTP, error) {
	t := &SRTP{}
	var err error
	if t.inRTP.ctx, err = newContext(remote, true); err != nil {
		return nil, err
	}
	if t.inRTCP.ctx, err = newContext(remote, true); err != nil {
		return nil, err
	}
	if t.outRTP.ctx, err = newContext(local, false); err != nil {
		return nil, err
	}
	if t.outRTCP.ctx, err = newContext(local, false); err != nil {
		return nil, err
	}
	t.inRTP.keys, t.inRTCP.keys, t.outRTP.keys, t.outRTCP.keys = remote, remote, local, local
	return t, nil
}

// NewSDES builds the transform of an SDES leg from our line (what we
// send) and the peer's line (what it sends).
func NewSDES(local, remote Crypto) (*SRTP, error) {
	lk, err := KeysFromCrypto(local)
	if err != nil {
		return nil, err
	}
	rk, err := KeysFromCrypto(remote)
	if err != nil {
		return nil, err
	}
	return NewSRTP(lk, rk)
}

func newContext(k SRTPKeys, decrypt bool) (*pion.Context, error) {
	opts := k.options()
	if decrypt {
		opts = append(opts, pion.SRTPReplayProtection(ReplayWindow), pion.SRTCPReplayProtection(ReplayWindow))
	}
	c, err := pion.CreateContext(k.Key, k.Salt, k.Profile, opts...)
	if err != nil {
		return nil, fmt.Errorf("srtp: context: %w", err)
	}
	for _, m := range k.More {
		if err := c.AddCipherForMKI(m.MKI, m.Key, m.Salt); err != nil {
			return nil, fmt.Errorf("srtp: context: %w", err)
		}
	}
	return c, nil
}

// RekeyGrace is how long a decrypt context keeps the keys a rekey
// replaced, for the packets the peer sent with them: the SBC applies new
// keys when the answer passes through it, and the peer goes on with its
// old key until the answer (or, for the answerer, its own) reaches it
// and packets already in flight arrive after that, one round trip and
// the network's jitter in all. Within the grace a packet whose tag fails
// under the new keys is tried under the old ones (with their own replay
// window), so a rekey loses none; after it, the old keys are forgotten.
const RekeyGrace = 2 * time.Second

// Rekey replaces the keys (a re-INVITE with new a=crypto). A direction
// whose keys did not change keeps its context, replay window included. A
// direction that changes keeps the ROC (RTP) and SRTCP index of the last
// SSRC it handled (RFC 3711 §3.3.1: the ROC is not reset by a rekey), so
// an SSRC that goes on across the re-INVITE stays decryptable; a decrypt
// direction keeps its old keys for RekeyGrace. When the peer's address
// changed too (RFC 4568 §7.1.4: new SSRC, ROC 0), build a new transform
// with NewSRTP instead.
func (t *SRTP) Rekey(local, remote SRTPKeys) error {
	// Refuse bad keys before touching anything, so a failed rekey leaves
	// the transform as it was.
	if _, err := newContext(local, false); err != nil {
		return err
	}
	if _, err := newContext(remote, true); err != nil {
		return err
	}
	if err := t.inRTP.rekey(remote, true, false); err != nil {
		return err
	}
	if err := t.inRTCP.rekey(remote, true, true); err != nil {
		return err
	}
	if err := t.outRTP.rekey(local, false, false); err != nil {
		return err
	}
	return t.outRTCP.rekey(local, false, true)
}

// RekeySDES is Rekey from a=crypto lines.
func (t *SRTP) RekeySDES(local, remote Crypto) error {
	lk, err := KeysFromCrypto(local)
	if err != nil {
		return err
	}
	rk, err := KeysFromCrypto(remote)
	if err != nil {
		return err
	}
	return t.Rekey(lk, rk)
}

func (d *srtpDir) rekey(k SRTPKeys, decrypt, isRTCP bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sameKeys(d.keys, k) {
		return nil
	}
	c, err := newContext(k, decrypt)
	if err != nil {
		return err
	}
	if d.seen {
		if isRTCP {
			if idx, ok := d.ctx.Index(d.lastSSRC); ok {
				c.SetIndex(d.lastSSRC, idx)
			}
		} else if roc, ok := d.ctx.ROC(d.lastSSRC); ok {
			c.SetROC(d.lastSSRC, roc)
		}
	}
	if decrypt {
		d.prev, d.prevUntil = d.ctx, time.Now().Add(RekeyGrace).UnixNano()
	}
	d.ctx, d.keys = c, k
	return nil
}

// keep returns a copy of pkt while a replaced context is still in its
// grace (nil otherwise, and forgets it once the grace is over), for
// retry to try it on.
func (d *srtpDir) keep(pkt []byte) []byte {
	if d.prev == nil {
		return nil
	}
	if time.Now().UnixNano() > d.prevUntil {
		d.prev, d.scratch = nil, nil
		return nil
	}
	d.scratch = append(d.scratch[:0], pkt...)
	return d.scratch
}

// retry decrypts kept (a copy of a packet the current context refused)
// with the replaced context, when the refusal was a failed tag.
func (d *srtpDir) retry(dst, kept []byte, err error, isRTCP bool) ([]byte, error) {
	if kept == nil || !isAuthFailure(err) {
		return nil, err
	}
	var out []byte
	var err2 error
	if isRTCP {
		out, err2 = d.prev.DecryptRTCP(dst, kept, &d.rhdr)
	} else {
		out, err2 = d.prev.DecryptRTP(dst, kept, &d.hdr)
	}
	if err2 != nil {
		return nil, err // the packet is counted by the current keys' verdict
	}
	return out, nil
}

// ROC returns the rollover counter of ssrc in the given direction
// (outbound: what we send), for diagnostics and tests.
func (t *SRTP) ROC(outbound bool, ssrc uint32) (uint32, bool) {
	d := &t.inRTP
	if outbound {
		d = &t.outRTP
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx.ROC(ssrc)
}

// InboundRTP decrypts and authenticates an SRTP packet.
func (t *SRTP) InboundRTP(dst, pkt []byte) ([]byte, error) {
	d := &t.inRTP
	d.mu.Lock()
	kept := d.keep(pkt)
	out, err := d.ctx.DecryptRTP(dst, pkt, &d.hdr)
	if err == nil {
		d.lastSSRC, d.seen = d.hdr.SSRC, true
	} else {
		out, err = d.retry(dst, kept, err, false)
	}
	d.mu.Unlock()
	return out, err
}

// OutboundRTP encrypts an RTP packet.
func (t *SRTP) OutboundRTP(dst, pkt []byte) ([]byte, error) {
	d := &t.outRTP
	d.mu.Lock()
	out, err := d.ctx.EncryptRTP(dst, pkt, &d.hdr)
	if err == nil {
		d.lastSSRC, d.seen = d.hdr.SSRC, true
	}
	d.mu.Unlock()
	return out, err
}

// InboundRTCP decrypts and authenticates an SRTCP packet.
func (t *SRTP) InboundRTCP(dst, pkt []byte) ([]byte, error) {
	d := &t.inRTCP
	d.mu.Lock()
	kept := d.keep(pkt)
	out, err := d.ctx.DecryptRTCP(dst, pkt, &d.rhdr)
	if err == nil {
		d.lastSSRC, d.seen = rtcpSSRC(pkt), true
	} else {
		out, err = d.retry(dst, kept, err, true)
	}
	d.mu.Unlock()
	return out, err
}

// OutboundRTCP encrypts an RTCP packet.
func (t *SRTP) OutboundRTCP(dst, pkt []byte) ([]byte, error) {
	d := &t.outRTCP
	d.mu.Lock()
	ssrc := rtcpSSRC(pkt)
	out, err := d.ctx.EncryptRTCP(dst, pkt, &d.rhdr)
	if err == nil {
		d.lastSSRC, d.seen = ssrc, true
	}
	d.mu.Unlock()
	return out, err
}

func rtcpSSRC(pkt []byte) uint32 {
	if len(pkt) < 8 {
		return 0
	}
	return uint32(pkt[4])<<24 | uint32(pkt[5])<<16 | uint32(pkt[6])<<8 | uint32(pkt[7])
}

// isReplay reports whether a decrypt error is pion's replay refusal. pion
// does not export the sentinel; its Unwrap returns an error whose text is
// fixed ("duplicated packet"). TestIsReplayMatchesPion pins this.
func isReplay(err error) bool {
	u := errors.Unwrap(err)
	return u != nil && u.Error() == "duplicated packet"
}

// isAuthFailure reports whether a decrypt error is a failed tag check.
func isAuthFailure(err error) bool { return errors.Is(err, pion.ErrFailedToVerifyAuthTag) }
