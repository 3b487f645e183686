package sbc

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/internal/sipua"
)

var (
	topoCallID = regexp.MustCompile(`(?mi)^(?:call-id|i)\s*:\s*(\S+)`)
	topoTag    = regexp.MustCompile(`(?i);\s*tag=([^;>,\s]+)`)
	topoBranch = regexp.MustCompile(`(?i);\s*branch=([^;>,\s]+)`)
)

// dialogIDs are the Call-IDs, tags and Via branches in a message log:
// the identifiers of the leg it was received on.
func dialogIDs(msgs []sipua.Msg) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range msgs {
		for _, re := range []*regexp.Regexp{topoCallID, topoTag, topoBranch} {
			for _, sm := range re.FindAllStringSubmatch(string(m.Raw), -1) {
				if !seen[sm[1]] {
					seen[sm[1]] = true
					out = append(out, sm[1])
				}
			}
		}
	}
	return out
}

// leaks reports every secret (a string) and port (as ":port", "=port" or
// an m= line's port) of one side found anywhere, head or SDP body, in what
// the other side received.
func leaks(t *testing.T, seer string, msgs []sipua.Msg, secrets []string, ports []int) {
	t.Helper()
	if len(msgs) == 0 {
		t.Fatalf("the %s received nothing", seer)
	}
	for _, m := range msgs {
		raw := string(m.Raw)
		for _, s := range secrets {
			if s != "" && strings.Contains(raw, s) {
				t.Errorf("topology leak: the %s received %q in:\n%s", seer, s, raw)
			}
		}
		for _, p := range ports {
			if loc := portRe(p).FindStringIndex(raw); loc != nil {
				t.Errorf("topology leak: the %s received port %d: %q", seer, p, raw[max(0, loc[0]-60):min(len(raw), loc[1]+20)])
			}
		}
	}
}

// portRe finds a port as it appears in SIP and SDP: after ":" or "=", or
// as an m= line's port.
func portRe(p int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?:[:=]|m=\w+ )%d(?:[^0-9]|$)`, p))
}

// TestTopologyHiddenWithMedia: with media flowing, in both directions and
// for both profiles (plain RTP both sides; a WebRTC caller with ICE and
// DTLS-SRTP to a plain backend), nothing of one side reaches the other:
// not its IP address, SIP and media ports, dialog identifiers (Call-ID,
// tags, branches), the SBC's face towards it, nor (WebRTC) its ICE
// credentials, candidates or fingerprint; head and SDP body of every SIP
// message, re-INVITEs either way included (plain), and the media arrives
// from the SBC's relay (exchange checks the sources).
func TestTopologyHiddenWithMedia(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
		e := mediaEnv(t, backend, nil)
		call, res := e.dial(sipua.DialOptions{SDP: caller.sdp()})
		if res.StatusCode != 200 {
			t.Fatalf("final %d", res.StatusCode)
		}
		ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
		if err != nil {
			t.Fatal(err)
		}
		toExt, toInt := remote(t, res.Body()), remote(t, ci.Invite)
		exchange(t, caller, backend, toExt, toInt)
		// A re-INVITE each way (a hold, a resume) with the same media.
		a := caller.addr()
		if r, err := call.ReInvite(e.ctx, sipua.SDP(a.Addr().String(), int(a.Port()), 2, "sendonly")); err != nil || r.StatusCode != 200 {
			t.Fatalf("caller's re-INVITE: %v %v", r, err)
		}
		b := backend.addr()
		if r, err := e.backends[0].ReInvite(e.ctx, ci.CallID, sipua.SDP(b.Addr().String(), int(b.Port()), 2, "sendrecv")); err != nil || r.StatusCode != 200 {
			t.Fatalf("backend's re-INVITE: %v %v", r, err)
		}
		exchange(t, caller, backend, toExt, toInt)
		if err := call.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.eventually("the backend's call ended", func() bool {
			c, ok := e.backends[0].Call(ci.CallID)
			return ok && c.State == sipua.StateEnded
		})
		checkSidesHidden(t, e, []int{int(caller.addr().Port())}, []int{int(backend.addr().Port())})
	})
	t.Run("webrtc", func(t *testing.T) {
		backend := newPhone(t, backendIP)
		e := mediaEnv(t, backend, nil)
		w, offer := newWebPeer(t, e, webPeerOpts{})
		call, res := e.dial(sipua.DialOptions{SDP: []byte(offer)})
		if res.StatusCode != 200 {
			t.Fatalf("final %d", res.StatusCode)
		}
		ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
		if err != nil {
			t.Fatal(err)
		}
		w.answer(t, e, string(res.Body()))
		w.exchange(t, backend, remote(t, ci.Invite))
		// The browser's ICE pair ends on the SBC's external relay.
		pair, err := w.pc.GetSenders()[0].Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("no selected ICE pair: %v", err)
		}
		if pair.Remote.Address != sbcExtIP {
			t.Errorf("the browser's media goes to %s, want the SBC's %s", pair.Remote.Address, sbcExtIP)
		}
		if err := call.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.eventually("the backend's call ended", func() bool {
			c, ok := e.backends[0].Call(ci.CallID)
			return ok && c.State == sipua.StateEnded
		})
		// The browser's own: ICE credentials, fingerprint, candidates'
		// ports.
		var secrets []string
		var ports []int
		for _, l := range strings.Split(offer, "\r\n") {
			switch {
			case strings.HasPrefix(l, "a=ice-ufrag:"), strings.HasPrefix(l, "a=ice-pwd:"):
				secrets = append(secrets, l[strings.Index(l, ":")+1:])
			case strings.HasPrefix(l, "a=fingerprint:"):
				secrets = append(secrets, strings.Fields(l)[1])
			case strings.HasPrefix(l, "a=candidate:"):
				if f := strings.Fields(l); len(f) > 5 {
					var p int
					fmt.Sscan(f[5], &p)
					ports = append(ports, p)
				}
			}
		}
		if len(secrets) < 3 || len(ports) == 0 {
			t.Fatalf("the browser's offer has no ICE credentials, fingerprint or candidates:\n%s", offer)
		}
		leaks(t, "backend", e.backends[0].Received(), secrets, ports)
		checkSidesHidden(t, e, ports, []int{int(backend.addr().Port())})
	})
}

// checkSidesHidden checks both directions: the caller's address, SIP
// port, media ports and dialog identifiers, and the SBC's external face,
// never reach the backend; the backend's, and the SBC's internal face,
// never reach the caller.
func checkSidesHidden(t *testing.T, e *env, callerMedia, backendMedia []int) {
	t.Helper()
	callerMsgs, backendMsgs := e.caller.Received(), e.backends[0].Received()
	port := func(hostport string) int {
		var p int
		if i := strings.LastIndex(hostport, ":"); i >= 0 {
			fmt.Sscan(hostport[i+1:], &p)
		}
		return p
	}
	callerIDs, backendIDs := dialogIDs(callerMsgs), dialogIDs(backendMsgs)
	if len(callerIDs) < 3 || len(backendIDs) < 3 {
		t.Fatalf("dialog identifiers: caller %v, backend %v: the logs are not what the test expects", callerIDs, backendIDs)
	}
	// Positive controls: the detectors find a side's own SIP port and
	// address in what that side received (its Via, its Request-URI).
	for _, c := range []struct {
		msgs []sipua.Msg
		addr string
	}{{callerMsgs, e.caller.Addr()}, {backendMsgs, e.backends[0].Addr()}} {
		raw := ""
		for _, m := range c.msgs {
			raw += string(m.Raw)
		}
		if !portRe(port(c.addr)).MatchString(raw) || !strings.Contains(raw, c.addr[:strings.LastIndex(c.addr, ":")]) {
			t.Fatalf("the leak detector does not find %s in its own side's messages", c.addr)
		}
	}
	callerSecrets := append(callerIDs, callerIP, sbcExtIP, e.ext)
	backendSecrets := append(backendIDs, backendIP, sbcIntIP, e.backends[0].Addr())
	leaks(t, "backend", backendMsgs, callerSecrets, append([]int{port(e.caller.Addr()), port(e.ext)}, callerMedia...))
	leaks(t, "caller", callerMsgs, backendSecrets, append([]int{port(e.backends[0].Addr())}, backendMedia...))
}
