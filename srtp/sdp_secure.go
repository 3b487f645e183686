package srtp

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Security is what a leg's SDP says about ICE and DTLS for one m= line
// (media-level attributes, else session-level ones: baresip puts
// a=fingerprint and a=setup at session level).
type Security struct {
	// ICELite: the peer is a lite agent (session a=ice-lite).
	ICELite bool
	// ICE are the peer's a=ice-ufrag and a=ice-pwd (empty: no ICE).
	ICE ICECredentials
	// Setup is a=setup (SetupNone when absent).
	Setup Setup
	// Fingerprints are the usable a=fingerprint lines (SHA-256 or
	// stronger); Refused the others, to log.
	Fingerprints []Fingerprint
	Refused      []error
	// TLSProto: the m= line's profile is UDP/TLS/RTP/SAVP or SAVPF.
	TLSProto bool
}

// DTLS reports whether the m= line asks for DTLS-SRTP (a fingerprint, or a
// UDP/TLS/RTP/SAVP(F) profile).
func (s Security) DTLS() bool { return len(s.Fingerprints) > 0 || len(s.Refused) > 0 || s.TLSProto }

// RemoteSecurity reads m= line i's ICE and DTLS parameters. A malformed
// a=setup or ICE credentials that break RFC 8839 are ErrBadSDP; a refused
// fingerprint is listed in Refused.
func RemoteSecurity(s *sdp.SessionDescription, i int) (Security, error) {
	if s == nil || i < 0 || i >= len(s.MediaDescriptions) {
		return Security{}, fmt.Errorf("%w: no m= line %d", ErrBadSDP, i)
	}
	md := s.MediaDescriptions[i]
	var sec Security
	sec.TLSProto = slices.ContainsFunc(md.MediaName.Protos, func(p string) bool { return strings.EqualFold(p, "TLS") })
	get := func(key string) (string, bool) {
		for _, attrs := range [][]sdp.Attribute{md.Attributes, s.Attributes} {
			for _, a := range attrs {
				if strings.EqualFold(a.Key, key) {
					return strings.TrimSpace(a.Value), true
				}
			}
		}
		return "", false
	}
	for _, a := range s.Attributes {
		if strings.EqualFold(a.Key, "ice-lite") {
			sec.ICELite = true
		}
	}
	sec.ICE.Ufrag, _ = get("ice-ufrag")
	sec.ICE.Pwd, _ = get("ice-pwd")
	if sec.ICE != (ICECredentials{}) {
		if err := sec.ICE.Valid(); err != nil {
			return Security{}, fmt.Errorf("%w: %v", ErrBadSDP, err)
		}
	}
	if v, ok := get("setup"); ok {
		st, err := ParseSetup(v)
		if err != nil {
			return Security{}, fmt.Errorf("%w: %v", ErrBadSDP, err)
		}
		sec.Setup = st
	}
	// Fingerprints: the media level's if any, else the session's.
	for _, attrs := range [][]sdp.Attribute{md.Attributes, s.Attributes} {
		for _, a := range attrs {
			if !strings.EqualFold(a.Key, "fingerprint") {
				continue
			}
			f, err := ParseFingerprint(a.Value)
			if err != nil {
				sec.Refused = append(sec.Refused, err)
				continue
			}
			sec.Fingerprints = append(sec.Fingerprints, f)
		}
		if len(sec.Fingerprints)+len(sec.Refused) > 0 {
			break
		}
	}
	return sec, nil
}

// hostPriority is RFC 8445 §5.1.2.1 for a host candidate: type preference
// 126, local preference 65535.
func hostPriority(component int) uint32 {
	return 126<<24 | 65535<<8 | uint32(256-component)
}

func (a *Anchor) media(i int) (*MediaAnchor, error) {
	if i < 0 || i >= len(a.Media) {
		return nil, fmt.Errorf("%w: no media anchor %d", ErrAnchorMismatch, i)
	}
	return &a.Media[i], nil
}

// AddICELite adds our ICE-lite side for m= line i of the SDP sent to a
// leg: a=ice-lite once at session level, a=ice-ufrag, a=ice-pwd, one host
// candidate per component (one address with rtcp-mux or BUNDLE; RTP then
// RTCP without) and a=end-of-candidates.
func (a *Anchor) AddICELite(i int, local ICECredentials, candidates ...netip.AddrPort) error {
	m, err := a.media(i)
	if err != nil {
		return err
	}
	if err := local.Valid(); err != nil {
		return err
	}
	if len(candidates) == 0 || len(candidates) > 2 {
		return fmt.Errorf("srtp: %d ICE components", len(candidates))
	}
	lite := false
	for _, at := range a.SessionAttributes {
		if at.Key == "ice-lite" {
			lite = true
		}
	}
	if !lite {
		a.SessionAttributes = append(a.SessionAttributes, sdp.NewPropertyAttribute("ice-lite"))
	}
	m.Attributes = append(m.Attributes,
		sdp.NewAttribute("ice-ufrag", local.Ufrag),
		sdp.NewAttribute("ice-pwd", local.Pwd))
	for c, ap := range candidates {
		comp := c + 1
		m.Attributes = append(m.Attributes, sdp.NewAttribute("candidate",
			"1 "+strconv.Itoa(comp)+" udp "+strconv.FormatUint(uint64(hostPriority(comp)), 10)+" "+
				ap.Addr().Unmap().String()+" "+strconv.Itoa(int(ap.Port()))+" typ host"))
	}
	m.Attributes = append(m.Attributes, sdp.NewPropertyAttribute("end-of-candidates"))
	return nil
}

// AddDTLS adds our DTLS side for m= line i: a=setup and a=fingerprint
// (media level, RFC 8842).
func (a *Anchor) AddDTLS(i int, setup Setup, fp Fingerprint) error {
	m, err := a.media(i)
	if err != nil {
		return err
	}
	if setup < SetupActive || setup > SetupHoldconn || len(fp.Value) == 0 {
		return fmt.Errorf("srtp: DTLS anchor needs a setup and a fingerprint")
	}
	m.Attributes = append(m.Attributes,
		sdp.NewAttribute("setup", setup.String()),
		sdp.NewAttribute("fingerprint", fp.String()))
	return nil
}
