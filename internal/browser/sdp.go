package browser

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// AnswerSDP returns an SDP answer that chromium accepts for the audio offer
// of a Call: one BUNDLEd Opus stream with made-up ICE credentials and DTLS
// fingerprint. No media flows (no ICE candidate is given), but JsSIP takes
// the 2xx, sends the ACK and hangs up cleanly. The mid and the Opus payload
// type are the offer's.
func AnswerSDP(offer []byte) ([]byte, error) {
	mid, opus := "", ""
	inAudio := false
	for _, line := range strings.Split(string(offer), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "m="):
			inAudio = strings.HasPrefix(line, "m=audio ")
		case inAudio && mid == "" && strings.HasPrefix(line, "a=mid:"):
			mid = strings.TrimPrefix(line, "a=mid:")
		case inAudio && opus == "" && strings.HasPrefix(line, "a=rtpmap:") && strings.Contains(strings.ToLower(line), " opus/48000"):
			opus = strings.Fields(strings.TrimPrefix(line, "a=rtpmap:"))[0]
		}
	}
	if mid == "" || opus == "" {
		return nil, errors.New("browser: the offer has no audio stream with a mid and Opus")
	}
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	w("v=0")
	w("o=- 1 1 IN IP4 127.0.0.1")
	w("s=-")
	w("t=0 0")
	w("a=group:BUNDLE %s", mid)
	w("m=audio 9 UDP/TLS/RTP/SAVPF %s", opus)
	w("c=IN IP4 0.0.0.0")
	w("a=rtcp:9 IN IP4 0.0.0.0")
	w("a=ice-ufrag:sbct")
	w("a=ice-pwd:sbcbrowserharnesspassword")
	w("a=fingerprint:sha-256 %s", strings.TrimSuffix(strings.Repeat("AB:", 32), ":"))
	w("a=setup:active")
	w("a=mid:%s", mid)
	w("a=sendrecv")
	w("a=rtcp-mux")
	w("a=rtpmap:%s opus/48000/2", opus)
	return b.Bytes(), nil
}
