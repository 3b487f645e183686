package sbc

import (
	"context"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/baresip"
	"github.com/sbc-project/sbc/internal/browser"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// browserHold is how long the browser keeps its call up.
const browserHold = 6 * time.Second

// browserNetnsEnv names the namespace a test runs in after runInNetns.
const browserNetnsEnv = "SBC_TEST_NETNS"

// runInNetns runs t's test again, alone, in a new network namespace with
// only lo (up), and fails t if it fails there. Its output is t's log.
func runInNetns(t *testing.T) {
	t.Helper()
	ns := netnstest.New(t, "sbc-chrome")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", ns, exe, "-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), browserNetnsEnv+"="+ns)
	out, err := cmd.CombinedOutput()
	t.Logf("in network namespace %s (only lo):\n%s", ns, out)
	switch {
	case err != nil:
		t.Fatalf("the test failed in its namespace: %v", err)
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatal("the test did not pass in its namespace (skipped?)")
	}
}

// TestBrowserMediaToSDESBackend: a real browser call with media through
// the SBC. Headless Chromium runs JsSIP over the SBC's WSS listener and
// calls a baresip backend; the browser's leg is WebRTC (DTLS-SRTP, ICE,
// rtcp-mux, BUNDLE: trunk media_encryption "dtls", required), which the SBC
// terminates as an ICE-lite agent with its own certificate; the backend's
// leg is SDES-SRTP (pool media_encryption "sdes", baresip srtp-mand).
// Chromium's fake microphone plays a 440 Hz WAV: baresip's decoded audio
// must be 440 Hz. baresip sends 660 Hz: Chromium's getStats must show
// packets decrypted and decoded (inbound-rtp packetsReceived, audio
// energy), and Chromium must log no SRTP packet that failed to decrypt.
//
// ICE stays on loopback: the test runs itself again (the same test
// binary, this test only) in a network namespace of its own whose only
// interface is lo, so that chromium has no other address to check from
// (outside one, it offers its loopback candidates but also pairs its
// sockets on the machine's other addresses with the SBC's candidate, and
// the SBC, rightly, answers them there). Chromium gathers loopback
// candidates (--allow-loopback-in-peer-connection), and the page would
// drop any other from its offer (the harness's Media option). Creating
// the namespace needs root: skipped without (failed with
// SBC_REQUIRE_PRIV=1).
func TestBrowserMediaToSDESBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("a real call of several seconds")
	}
	browser.Require(t)
	if err := baresip.Available(); err != nil && os.Getenv("CI") != "true" {
		t.Skipf("baresip: %v", err) // in CI, baresip.Start fails the test
	}
	if os.Getenv(browserNetnsEnv) == "" {
		runInNetns(t)
		return
	}
	sox, err := exec.LookPath("sox")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// Chromium's microphone: a 440 Hz sine, played in a loop.
	wav := filepath.Join(t.TempDir(), "tone440.wav")
	if out, err := exec.Command(sox, "-n", "-r", "48000", "-c", "1", "-b", "16", wav,
		"synth", "10", "sine", "440", "vol", "0.9").CombinedOutput(); err != nil {
		t.Fatalf("sox: %v\n%s", err, out)
	}

	callee := baresip.Start(t, baresip.Options{IP: netip.MustParseAddr(callerIP), User: "b",
		MediaEnc: "srtp-mand", ToneHz: calleeToneHz, Quit: 90 * time.Second})
	k := newTestPKI(t)
	e := newEnv(t, envOpts{targets: []string{callee.SIPAddr().String()}, edit: func(p *testpolicy.Policy) {
		ext := p.Realm("external")
		ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "wss", Bind: "127.0.0.1:0", Origins: []string{"*"},
			TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc")}})
		tr := p.Trunk("carrier")
		tr.MediaEncryption, tr.MediaRequired = "dtls", true
		p.Pool("pbx").MediaEncryption = "sdes"
	}})
	la, _ := e.sbc.ListenAddr("external", "wss")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := browser.Call(ctx, t, browser.CallOptions{WSSURL: "wss://" + la.String(), URI: "sip:alice@example.test",
		Target: "sip:b@example.test", Media: true, HoldFor: browserHold, AudioFile: wav})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.ByeStatus != 200 {
		t.Fatalf("call: status %d, BYE %d, cause %q, error %q", res.Status, res.ByeStatus, res.Cause, res.Error)
	}

	// The offer named loopback addresses only (the page dropped the rest).
	offer := ""
	for _, m := range res.Messages {
		if m.Dir == "sent" && strings.HasPrefix(m.Text, "INVITE ") {
			offer = m.Text
			break
		}
	}
	cands := regexp.MustCompile(`(?m)^a=candidate:\S+ \d+ \S+ \d+ (\S+) `).FindAllStringSubmatch(offer, -1)
	if len(cands) == 0 {
		t.Fatalf("the browser's offer has no candidate:\n%s", offer)
	}
	for _, c := range cands {
		if a, err := netip.ParseAddr(c[1]); err != nil || !a.IsLoopback() {
			t.Errorf("the browser's offer has a candidate of %s", c[1])
		}
	}
	t.Logf("browser: %d loopback candidates offered, %d others dropped by the page", len(cands), len(res.DroppedCandidates))

	// The browser's side: DTLS up, SRTP packets decrypted and decoded.
	m := res.Media
	if m == nil {
		t.Fatal("the page reported no statistics")
	}
	minPackets := int64(browserHold / (20 * time.Millisecond) / 2) // half of 20 ms packets
	if m.PacketsReceived < minPackets || m.PacketsSent < minPackets || m.TotalAudioEnergy <= 0 ||
		m.DTLSState != "connected" || m.SRTPCipher == "" {
		t.Errorf("browser statistics: %d packets received, %d sent, audio energy %g, DTLS %q, SRTP %q; want ≥ %d packets each way, energy, DTLS connected and a cipher\n%s",
			m.PacketsReceived, m.PacketsSent, m.TotalAudioEnergy, m.DTLSState, m.SRTPCipher, minPackets, m.Raw)
	}
	for _, a := range []string{m.LocalCandidate, m.RemoteCandidate} {
		if ap, err := netip.ParseAddrPort(a); err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("the selected ICE pair has %q, want loopback addresses", a)
		}
	}
	if n := strings.Count(res.BrowserLog, "Failed to unprotect SRTP"); n != 0 {
		t.Errorf("chromium logged %d SRTP packets that failed to decrypt", n)
	}
	t.Logf("browser: received %d packets (%d bytes, %d lost, codec %s, audio energy %.3g), sent %d; DTLS %s as %s, SRTP %s; ICE pair %s → %s",
		m.PacketsReceived, m.BytesReceived, m.PacketsLost, m.Codec, m.TotalAudioEnergy, m.PacketsSent,
		m.DTLSState, m.DTLSRole, m.SRTPCipher, m.LocalCandidate, m.RemoteCandidate)

	// The backend's side: baresip decoded the browser's 440 Hz.
	if !callee.WaitLog("packets:", 20*time.Second) {
		t.Fatal("the backend's call did not end")
	}
	callee.Stop()
	e.eventually("the call's end", func() bool { return e.sbc.calls.len() == 0 })
	stats, err := callee.RTPStats()
	if err != nil {
		t.Fatal(err)
	}
	if int64(stats.RxPackets) < minPackets || stats.TxPackets == 0 || stats.RxErrors != 0 {
		t.Errorf("backend RTP statistics %+v: want ≥ %d packets received, packets sent, no errors", stats, minPackets)
	}
	if rtpFail, _ := callee.DecryptFailures(); rtpFail != 0 {
		t.Errorf("backend: %d SRTP packets failed to decrypt", rtpFail)
	}
	calleeOffer := sdpOf(t, "the backend's INVITE", callee.Received(), "INVITE ")
	checkProfile(t, "the backend's offer", calleeOffer, "sdes")
	decoded, err := callee.DecodedWAV()
	if err != nil {
		t.Fatal(err)
	}
	tone := baresip.Measure(t, decoded)
	if math.Abs(tone.Frequency-callerToneHz) > 0.05*callerToneHz || tone.RMS < 0.02 {
		t.Errorf("backend decoded %.0f Hz, RMS %.3f over %.2f s; want %d Hz ± 5%%, RMS ≥ 0.02", tone.Frequency, tone.RMS, tone.Seconds, callerToneHz)
	}
	t.Logf("backend: decoded %.0f Hz (the browser sent %d Hz), RMS %.3f, %.2f s; RTP packets rx %d tx %d, errors rx %d tx %d",
		tone.Frequency, callerToneHz, tone.RMS, tone.Seconds, stats.RxPackets, stats.TxPackets, stats.RxErrors, stats.TxErrors)
}
