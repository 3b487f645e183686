package srtp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sbc-project/sbc/internal/sipua"
)

// TestBaresipDTLS: baresip 1.0.0 (Debian, dtls_srtp module, OpenSSL)
// calls a backend whose media the SBC anchors: leg A terminates its
// DTLS-SRTP, leg B is a plain phone that echoes. baresip's DTLS-SRTP
// offer is actpass with session-level fingerprint; the SBC answers
// passive (baresip is the DTLS client) or active (the SBC is). Proof:
// the handshake completes with baresip's certificate, the SBC decrypts
// baresip's SRTP with no authentication failure, and baresip decrypts
// the echo (its rtp_stats count received packets and no errors). Skipped
// without baresip, unless CI=true.
func TestBaresipDTLS(t *testing.T) {
	bin, err := exec.LookPath("baresip")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("baresip is required in CI (Debian package baresip)")
		}
		t.Skip("baresip not installed")
	}
	for _, prefer := range []Setup{SetupPassive, SetupActive} {
		t.Run("sbc "+prefer.String(), func(t *testing.T) { runBaresipDTLS(t, bin, prefer) })
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		_ = c.Close()
		// baresip also listens on TCP port and port+1 (TLS).
		ok := true
		for _, q := range []int{p, p + 1} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
			if err != nil {
				ok = false
				break
			}
			_ = l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

func runBaresipDTLS(t *testing.T, bin string, prefer Setup) {
	pp := newTestPool(t)
	echo := newPhone(t)
	res, onDone := newResults()

	var (
		mu     sync.Mutex
		stream *Stream
		d      *DTLS
		setErr error
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if stream != nil {
			_ = stream.Close()
		}
	})
	answer := func(req *sip.Request) (sipua.Plan, error) {
		in, err := ParseSDP(req.Body())
		if err != nil {
			return sipua.Plan{}, err
		}
		rm, err := Remote(in, 0)
		if err != nil {
			return sipua.Plan{}, err
		}
		sec, err := RemoteSecurity(in, 0)
		if err != nil {
			return sipua.Plan{}, err
		}
		if !rm.Mux || len(sec.Fingerprints) == 0 {
			return sipua.Plan{}, fmt.Errorf("baresip offered mux=%v fingerprints=%v", rm.Mux, sec.Fingerprints)
		}
		setup, err := AnswerSetup(sec.Setup, prefer)
		if err != nil {
			return sipua.Plan{}, err
		}
		dd, err := NewDTLS(DTLSConfig{Certificate: sbcCert, Setup: setup, RemoteSetup: sec.Setup,
			RemoteFingerprints: sec.Fingerprints, OnDone: onDone})
		if err != nil {
			return sipua.Plan{}, err
		}
		pa, err := pp.Allocate(true)
		if err != nil {
			return sipua.Plan{}, err
		}
		s, err := NewStream(StreamConfig{
			A: LegConfig{Ports: pa, Remote: rm.RTP, Handler: dd, Normalize: true},
			B: LegConfig{Ports: allocate(t, pp, true), Remote: echo.addr()},
		})
		if err != nil {
			return sipua.Plan{}, err
		}
		mu.Lock()
		stream, d = s, dd
		mu.Unlock()
		a := Anchor{Addr: loopback, Origin: NewOrigin("sbc", loopback), Media: []MediaAnchor{{Port: int(pa.RTPAddr().Port())}}}
		if err := a.AddDTLS(0, setup, sbcCert.Fingerprint); err != nil {
			return sipua.Plan{}, err
		}
		out, err := Rewrite(in, a)
		if err != nil {
			return sipua.Plan{}, err
		}
		body, err := out.Marshal()
		return sipua.Plan{Body: body, HangupAfter: 3 * time.Second, Headers: []sip.Header{sip.NewHeader("Content-Type", "application/sdp")}}, err
	}
	be, err := sipua.NewBackend(sipua.BackendOptions{LogLimit: -1, Answer: func(req *sip.Request) sipua.Plan {
		p, err := answer(req)
		if err != nil {
			mu.Lock()
			setErr = err
			mu.Unlock()
			return sipua.Plan{Final: 488}
		}
		return p
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })

	// The echo: what leg B receives goes back (bounded).
	go func() {
		buf := make([]byte, 2048)
		for range 2000 {
			n, _, err := echo.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			s := stream
			mu.Unlock()
			b, _ := s.LocalAddr(LegB)
			_, _ = echo.conn.WriteToUDPAddrPort(buf[:n], b)
		}
	}()
	_ = echo.conn.SetReadDeadline(time.Now().Add(30 * time.Second))

	dir := t.TempDir()
	port := freeUDPPort(t)
	rtpBase := 50100 + 2*(port%400)
	config := fmt.Sprintf(`poll_method epoll
sip_listen 127.0.0.1:%d
net_interface 127.0.0.1
call_local_timeout 30
audio_source ausine,440
ausrc_srate 48000
ausrc_channels 2
rtp_ports %d-%d
rtcp_mux yes
rtp_stats yes
rtp_timeout 10
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module srtp.so
module dtls_srtp.so
module_tmp uuid.so
module_tmp account.so
module_app menu.so
`, port, rtpBase, rtpBase+19)
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	acct := fmt.Sprintf("<sip:a@127.0.0.1:%d>;regint=0;mediaenc=dtls_srtp;audio_codecs=pcmu\n", port)
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(acct), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", dir, "-t", "6", "-e", "/dial sip:b@"+be.Addr())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("baresip: %v\n%s", err, out.String())
	}
	log := out.String()
	mu.Lock()
	s, e := stream, setErr
	mu.Unlock()
	if e != nil || s == nil {
		t.Fatalf("answer: %v\n%s", e, log)
	}
	var r DTLSResult
	select {
	case r = <-res:
	default:
		t.Fatalf("no DTLS result\n%s", log)
	}
	wantClient := prefer == SetupActive
	if r.Err != nil || r.Client != wantClient || !r.Suite.Valid() {
		t.Fatalf("%+v\n%s", r, log)
	}
	// baresip 1.0.0 sends its last RTCP (BYE "Adjo" + SDES, 48 bytes) in
	// the clear once its SRTP context is gone at hangup: one authentication
	// failure at most, and none of RTP.
	st := s.Stats()
	if st.A.Packets < 20 || st.A.Packets != st.A.Forwarded || st.A.AuthFailures() > 1 || st.A.Dropped[DropDecrypt] != 0 || st.B.Forwarded < 20 {
		t.Fatalf("A %+v\nB %+v\n%s", st.A, st.B, log)
	}
	// baresip's rtp_stats: "packets: <tx> <rx>" and "errors: <tx> <rx>".
	pk := regexp.MustCompile(`packets:\s+(\d+)\s+(\d+)`).FindStringSubmatch(log)
	er := regexp.MustCompile(`errors:\s+(-?\d+)\s+(-?\d+)`).FindStringSubmatch(log)
	if pk == nil || er == nil {
		t.Fatalf("no rtp_stats in baresip's output\n%s", log)
	}
	rx, _ := strconv.Atoi(pk[2])
	if rx < 20 || er[2] != "0" || bytes.Contains(out.Bytes(), []byte("failed to decrypt")) {
		t.Fatalf("baresip received %d packets, errors %s\n%s", rx, er[2], log)
	}
	t.Logf("DTLS %v as client=%v; SBC decrypted %d, baresip received %d", r.Suite, r.Client, st.A.Packets, rx)
	if ds := d.Stats(); ds.Handshakes != 1 || ds.Completed != 1 || ds.Refused != 0 {
		t.Fatalf("%+v", ds)
	}
}
