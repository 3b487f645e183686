package sbc

// Interop tests of TLS against real peers on loopback: SIPp (through
// stunnel shims, Debian's SIPp having no TLS), stunnel/OpenSSL as a TLS
// client presenting good and bad certificates, sslscan auditing the
// listeners, and Kamailio as a registrar reached over mutual TLS. Each
// external binary is skipped when missing, except with CI=true, where its
// absence fails the test. Every wait is bounded; nothing asserts on time.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/certgen"
	"github.com/sbc-project/sbc/internal/kamailio"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/sslscan"
	"github.com/sbc-project/sbc/internal/stunnel"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// interopCalls is how many calls each SIPp flow of the TLS interop test
// places, at interopRate calls per second.
const (
	interopCalls = 25
	interopRate  = 10
)

// interopTimeout bounds one SIPp run; SIPp's own -timeout is shorter so
// that it reports its failure itself.
const interopTimeout = 60 * time.Second

var loopback = netip.MustParseAddr("127.0.0.1")

// TestInteropTLSSIPpCalls: SIPp UAC over TCP → stunnel client shim
// (presenting the carrier's certificate) → the SBC's external TLS listener
// (mutual TLS, trunk known by dns:carrier.example.test alone) → the pool,
// either over TLS to a stunnel server shim (requiring the SBC's client
// certificate) in front of a SIPp UAS on TCP, or over UDP to a SIPp UAS.
// Two flows run one after the other on the same SBC: BYE from the caller,
// and BYE from the callee, which the SBC must send to the caller over the
// TLS connection the caller opened (the only way to reach it: SIPp listens
// on plain TCP, behind the shim).
func TestInteropTLSSIPpCalls(t *testing.T) {
	bin := sippBinary(t)
	requireStunnel(t)
	for _, pool := range []string{"tls", "udp"} {
		t.Run("pool_"+pool, func(t *testing.T) { runInteropTLSCalls(t, bin, pool) })
	}
}

func runInteropTLSCalls(t *testing.T, bin, poolTransport string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*interopTimeout)
	defer cancel()
	k := newTestPKI(t)
	k.issue("uas", certgen.LeafOptions{CN: "uas", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsServer: true})

	// The UAS, and the pool target in front of it.
	uasMode, uasNet := "u1", "udp"
	if poolTransport == "tls" {
		uasMode, uasNet = "t1", "tcp"
	}
	uasPort := freeLoopbackPort(t, uasNet)
	target := netip.AddrPortFrom(loopback, uint16(uasPort))
	if poolTransport == "tls" {
		target = stunnel.Server(t, stunnel.ServerOptions{
			Connect:  netip.AddrPortFrom(loopback, uint16(uasPort)),
			CertFile: k.file("uas"), KeyFile: k.key("uas"),
			CAFile: k.file("ca"), RequireClientCert: true,
		})
	}

	pb := tlsPolicy(k, target.String())
	pbx := pb.Pool("pbx")
	pbx.Transport = poolTransport
	if poolTransport != "tls" {
		pbx.TLS = nil
	}
	pb.Limits = &testpolicy.Limits{SourcePPS: new(1000000), SourceCPS: new(1000000)}
	logs := &syncBuffer{}
	s := startSBC(t, pb.Parse(t), Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sbc log:\n%s", tail(logs.String(), 8000))
		}
	})
	ext, _ := s.ListenAddr("external", "tls")
	shim := stunnel.Client(t, stunnel.ClientOptions{
		Connect:  ext,
		CertFile: k.file("carrier"), KeyFile: k.key("carrier"),
		CAFile: k.file("ca"), ServerName: sbcExtIP,
	})

	flows := []string{"call", "callee_bye"}
	for i, flow := range flows {
		uac, uas := runSIPpPair(ctx, t, bin, sippPair{
			flow: flow, calls: interopCalls, rate: interopRate,
			uasMode: uasMode, uasPort: uasPort, remote: shim,
		})
		// The callee received every INVITE from the SBC over the pool's
		// transport (the SBC's Via names it), none from elsewhere.
		wantVia := "SIP/2.0/" + strings.ToUpper(poolTransport) + " " + sbcIntIP + ":"
		if n := countReceived(uas, "INVITE ", wantVia); n != interopCalls {
			t.Errorf("%s: the UAS received %d INVITEs with Via %s…, want %d", flow, n, wantVia, interopCalls)
		}
		if n := countReceived(uas, "INVITE ", ""); n != interopCalls {
			t.Errorf("%s: the UAS received %d INVITEs, want %d", flow, n, interopCalls)
		}
		if flow == "callee_bye" {
			// Every BYE of the callee reached the caller, sent by the SBC's
			// TLS listener on the caller's connection.
			extVia := "SIP/2.0/TLS " + sbcExtIP + ":" + strconv.Itoa(int(ext.Port()))
			if n := countReceived(uac, "BYE ", extVia); n != interopCalls {
				t.Errorf("the UAC received %d BYEs with Via %s, want %d", n, extVia, interopCalls)
			}
		}
		if poolTransport == "tls" && i < len(flows)-1 {
			// The UAS is gone and the shim closed the SBC's connection:
			// wait until the SBC knows, so that the next flow's first
			// INVITE dials a new one instead of racing the close.
			waitUntil(ctx, t, "the SBC to see its TLS connection to the pool closed", func() bool {
				return !s.realms["internal"].connUp("tls", target)
			})
		}
	}

	total := float64(len(flows) * interopCalls)
	waitCount(ctx, t, `sbc_calls_total{result="answered"}`, func() float64 {
		return metricSum(s, "sbc_calls_total", map[string]string{"result": "answered"})
	}, total)
	if got := metricSeries(s, "sbc_calls_total", nil, "result"); len(got) != 1 {
		t.Errorf("sbc_calls_total: %v, want only answered", got)
	}
	// One TLS connection per SIPp caller run (stunnel opens one per TCP
	// connection; SIPp's t1 mode opens one), each handshake passed.
	if got := tlsHandshakes(s, "external", "server"); !maps.Equal(got, map[string]float64{"ok": float64(len(flows))}) {
		t.Errorf("server handshakes on the external TLS listener: %v, want ok=%d", got, len(flows))
	}
	// The SBC never dialled the caller: BYEs went on its connection.
	if got := tlsHandshakes(s, "external", "client"); len(got) != 0 {
		t.Errorf("the SBC made TLS handshakes towards the caller: %v", got)
	}
	wantClient := map[string]float64{}
	if poolTransport == "tls" {
		// One connection per UAS run: dialled again after the first closed.
		wantClient["ok"] = float64(len(flows))
	}
	if got := tlsHandshakes(s, "internal", "client"); !maps.Equal(got, wantClient) {
		t.Errorf("client handshakes towards the pool: %v, want %v", got, wantClient)
	}
	if d := metricSeries(s, "sbc_dropped_total", nil, "stage", "reason"); len(d) != 0 {
		t.Errorf("sbc_dropped_total in clean call flows: %v", d)
	}
	t.Logf("pool %s: %v calls answered; server handshakes %v; client handshakes towards the pool %v",
		poolTransport, metricSum(s, "sbc_calls_total", map[string]string{"result": "answered"}),
		tlsHandshakes(s, "external", "server"), tlsHandshakes(s, "internal", "client"))
}

// TestInteropTLSRefusalsStunnel: stunnel (OpenSSL) as the carrier's TLS
// client, with TLS 1.2 and with TLS 1.3 (where the client's handshake
// completes before the server has judged its certificate): the carrier's
// certificate passes and its OPTIONS is answered, on a first connection
// and on a second (which OpenSSL would resume); no certificate, another
// CA's, an expired one, a not yet valid one, and a valid one that maps to
// no trunk are refused at the handshake, get no answer, and are counted in
// sbc_tls_handshakes_total and sbc_dropped_total{stage="tls"} with their
// reason.
func TestInteropTLSRefusalsStunnel(t *testing.T) {
	requireStunnel(t)
	e := newTLSEnv(t, nil)
	ext := netip.MustParseAddrPort(e.tlsAddr)
	for _, v := range []struct{ name, extra string }{
		{"tls12", "sslVersionMax = TLSv1.2"},
		{"tls13", "sslVersionMin = TLSv1.3"},
	} {
		for _, tc := range []struct {
			leaf   string
			reason reason // "" passes
		}{
			{"carrier", ""},
			{"", reasonCertMissing},
			{"foreign", reasonCertUnknownCA},
			{"expired", reasonCertExpired},
			{"future", reasonCertNotYetValid},
			{"stranger", reasonCertNoTrunk},
		} {
			name := tc.leaf
			if name == "" {
				name = "none"
			}
			t.Run(v.name+"/"+name, func(t *testing.T) {
				opts := stunnel.ClientOptions{Connect: ext, CAFile: e.pki.file("ca"), ServerName: sbcExtIP, Extra: []string{v.extra}}
				if tc.leaf != "" {
					opts.CertFile, opts.KeyFile = e.pki.file(tc.leaf), e.pki.key(tc.leaf)
				}
				shim := stunnel.Client(t, opts)
				result := string(tc.reason)
				if tc.reason == "" {
					result = tlsOK
				}
				before := e.handshakes(result)
				dropped := func() float64 {
					return metricSum(e.sbc, "sbc_dropped_total", map[string]string{"stage": string(stageTLS), "reason": string(tc.reason)})
				}
				droppedBefore := dropped()
				want := 1.0
				if tc.reason == "" {
					// Twice, on two connections: OpenSSL would resume its
					// session on the second.
					want = 2
					for i := range 2 {
						if status, err := plainOptions(e.ctx, shim); err != nil || !strings.HasPrefix(status, "SIP/2.0 200") {
							t.Fatalf("OPTIONS %d through stunnel with the carrier's certificate: %q, %v", i+1, status, err)
						}
					}
				} else if status, err := plainOptions(e.ctx, shim); err == nil {
					t.Fatalf("OPTIONS answered over a connection the SBC should have refused: %q", status)
				}
				waitCount(e.ctx, t, "sbc_tls_handshakes_total{result="+result+"}", func() float64 { return e.handshakes(result) }, before+want)
				if tc.reason != "" {
					waitCount(e.ctx, t, "sbc_dropped_total{stage=tls,reason="+string(tc.reason)+"}", dropped, droppedBefore+1)
				}
			})
		}
	}
	t.Logf("server handshakes: %v; dropped: %v", tlsHandshakes(e.sbc, "external", "server"),
		metricSeries(e.sbc, "sbc_dropped_total", map[string]string{"stage": string(stageTLS)}, "reason"))
}

// plainOptions sends an OPTIONS over a new plain TCP connection to addr
// (a stunnel client shim) and returns the status line of the answer. A
// connection closed (or reset) without an answer is an error.
func plainOptions(ctx context.Context, addr netip.AddrPort) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	la := conn.LocalAddr().String()
	msg := "OPTIONS sip:sbc@" + addr.String() + ";transport=tcp SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + la + ";branch=z9hG4bK" + newID() + ";rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=" + newID() + "\r\n" +
		"To: <sip:sbc@" + addr.String() + ">\r\nCall-ID: " + newID() + "\r\nCSeq: 1 OPTIONS\r\n" +
		"Contact: <sip:probe@" + la + ";transport=tcp>\r\nContent-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && line == "" {
			return "", errors.New("connection closed without an answer")
		}
		return strings.TrimSpace(line), err
	}
	return strings.TrimSpace(line), nil
}

// sippBinary returns the sipp binary, skipping the test when it is not
// installed, except in CI (CI=true) where its absence is a failure.
func sippBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("sipp not found (install Debian package sip-tester): %v", err)
		}
		t.Skip("sipp not installed (Debian package sip-tester)")
	}
	return p
}

// requireStunnel skips the test without stunnel, except in CI (CI=true),
// where that fails it; checked before anything is started.
func requireStunnel(t *testing.T) {
	t.Helper()
	if err := stunnel.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// sippPair is one SIPp run: a UAS, then a UAC calling remote over TCP.
type sippPair struct {
	flow    string // scenarios testdata/sipp/uac_<flow>.xml and uas_<flow>.xml
	calls   int
	rate    int
	uasMode string // -t of the UAS: "u1" or "t1"
	uasPort int    // on 127.0.0.1
	remote  netip.AddrPort
}

// runSIPpPair runs a SIPp UAS and UAC to the end of their calls and returns
// their message logs (what each received and sent). Either exiting with
// an error (SIPp exits 0 only when every call reached the end of its
// scenario) fails the test with both outputs and logs.
func runSIPpPair(ctx context.Context, t *testing.T, bin string, p sippPair) (uac, uas []sippMessage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, interopTimeout)
	defer cancel()
	dir := t.TempDir()
	common := []string{"-i", loopback.String(), "-m", strconv.Itoa(p.calls), "-nostdin",
		"-timeout", strconv.Itoa(int(interopTimeout/time.Second) - 10), "-timeout_error", "-trace_msg", "-trace_err"}
	file := func(n string) string { return filepath.Join(dir, n) }
	uasProc := startSIPpProc(ctx, bin, append([]string{
		"-sf", filepath.Join("testdata", "sipp", "uas_"+p.flow+".xml"),
		"-t", p.uasMode, "-p", strconv.Itoa(p.uasPort),
		"-message_file", file("uas_messages.log"), "-error_file", file("uas_errors.log"),
	}, common...))
	if err := uasProc.start(); err != nil {
		t.Fatalf("start sipp uas: %v", err)
	}
	network := "udp"
	if p.uasMode == "t1" {
		network = "tcp"
	}
	waitBound(ctx, t, network, p.uasPort, uasProc.done)
	uacProc := startSIPpProc(ctx, bin, append([]string{
		"-sf", filepath.Join("testdata", "sipp", "uac_"+p.flow+".xml"),
		p.remote.String(), "-t", "t1", "-p", strconv.Itoa(freeLoopbackPort(t, "tcp")),
		"-r", strconv.Itoa(p.rate), "-l", strconv.Itoa(p.calls),
		"-message_file", file("uac_messages.log"), "-error_file", file("uac_errors.log"),
	}, common...))
	if err := uacProc.start(); err != nil {
		t.Fatalf("start sipp uac: %v", err)
	}
	<-uacProc.done
	if uacProc.err != nil {
		cancel() // the UAS would wait for its -timeout
	}
	<-uasProc.done
	if uacProc.err != nil || uasProc.err != nil {
		t.Logf("sipp uac output:\n%s", tail(uacProc.out.String(), 3000))
		t.Logf("sipp uas output:\n%s", tail(uasProc.out.String(), 3000))
		for _, n := range []string{"uac_errors.log", "uas_errors.log", "uac_messages.log", "uas_messages.log"} {
			if b, err := os.ReadFile(file(n)); err == nil {
				t.Logf("%s:\n%s", n, tail(string(b), 6000))
			}
		}
		t.Fatalf("sipp %s: uac: %v, uas: %v (exit 0 means every call succeeded)", p.flow, uacProc.err, uasProc.err)
	}
	return readSIPpMessages(t, file("uac_messages.log")), readSIPpMessages(t, file("uas_messages.log"))
}

// sippProc is a SIPp process.
type sippProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed once it exited; err is then set
	err  error
}

func startSIPpProc(ctx context.Context, bin string, args []string) *sippProc {
	p := &sippProc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.WaitDelay = 2 * time.Second
	return p
}

func (p *sippProc) start() error {
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return nil
}

// freeLoopbackPort returns a 127.0.0.1 port of network ("tcp", "udp")
// that was free a moment ago.
func freeLoopbackPort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitBound waits until a socket listens on 127.0.0.1:port (a bound UDP
// socket, or a TCP socket in LISTEN state), read from /proc/net so the
// owner is not disturbed by a probe, or until the process behind done
// exits.
func waitBound(ctx context.Context, t *testing.T, network string, port int, done <-chan struct{}) {
	t.Helper()
	want := fmt.Sprintf("0100007F:%04X", port)
	bound := func() bool {
		b, err := os.ReadFile("/proc/net/" + network)
		if err != nil {
			return false
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) > 3 && f[1] == want && (network == "udp" || f[3] == "0A") {
				return true
			}
		}
		return false
	}
	for !bound() {
		select {
		case <-done:
			t.Fatalf("sipp exited before binding %s port %d", network, port)
		case <-ctx.Done():
			t.Fatalf("nothing bound %s port %d", network, port)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitUntil polls cond until it holds, failing the test when ctx ends
// first.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sippMessage is one message of a SIPp -trace_msg log.
type sippMessage struct {
	sent bool
	text string
}

// readSIPpMessages splits a SIPp message log into its messages.
func readSIPpMessages(t *testing.T, path string) []sippMessage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("sipp message log: %v", err)
	}
	var out []sippMessage
	var cur *sippMessage
	var body strings.Builder
	flush := func() {
		if cur != nil {
			cur.text = strings.TrimSpace(body.String())
			out = append(out, *cur)
		}
		cur = nil
		body.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "-----------------------------------------------"):
			flush()
		case cur == nil && strings.Contains(line, " message sent "):
			cur = &sippMessage{sent: true}
		case cur == nil && strings.Contains(line, " message received "):
			cur = &sippMessage{}
		case cur != nil:
			body.WriteString(line)
			body.WriteByte('\n')
		}
	}
	flush()
	return out
}

// countReceived counts the messages received whose start line begins
// with start and, unless via is "", whose top Via begins with via.
func countReceived(msgs []sippMessage, start, via string) int {
	n := 0
	for _, m := range msgs {
		if m.sent || !strings.HasPrefix(m.text, start) {
			continue
		}
		if via == "" {
			n++
			continue
		}
		for line := range strings.Lines(m.text) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Via:"); ok {
				if strings.HasPrefix(strings.TrimSpace(v), via) {
					n++
				}
				break
			}
		}
	}
	return n
}

// metricSeries returns the non-zero series of a counter or gauge whose
// labels include match, keyed by the values of the labels keys joined
// with "/".
func metricSeries(s *SBC, name string, match map[string]string, keys ...string) map[string]float64 {
	out := map[string]float64{}
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if labels[k] != v {
					continue series
				}
			}
			v := m.GetCounter().GetValue()
			if g := m.GetGauge(); g != nil {
				v = g.GetValue()
			}
			if v == 0 {
				continue
			}
			var key []string
			for _, k := range keys {
				key = append(key, labels[k])
			}
			out[strings.Join(key, "/")] += v
		}
	}
	return out
}

// metricSum is the sum of the series of a metric whose labels include
// match.
func metricSum(s *SBC, name string, match map[string]string) float64 {
	var sum float64
	for _, v := range metricSeries(s, name, match) {
		sum += v
	}
	return sum
}

// tlsHandshakes is sbc_tls_handshakes_total of a realm's "tls" transport
// and side, by result (non-zero only).
func tlsHandshakes(s *SBC, realm, side string) map[string]float64 {
	return metricSeries(s, "sbc_tls_handshakes_total", map[string]string{"realm": realm, "transport": "tls", "side": side}, "result")
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// TestInteropTLSSSLScan: sslscan audits the SBC's listeners as an outside
// auditor would. The external realm's TLS listener (mutual TLS, scanned
// with the carrier's client certificate so that its TLS 1.2 suites are
// listed) and a WSS listener (no client certificate) accept TLS 1.2 and
// 1.3 only, no SSLv2, SSLv3, TLS 1.0 or 1.1, and nothing sslscan's result
// calls weak; with min_version = "1.3" (realm "modern") they accept TLS
// 1.3 only. The SBC counts the scans' handshakes.
func TestInteropTLSSSLScan(t *testing.T) {
	sslscan.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k := newTestPKI(t)
	const modernIP = "127.0.0.5"
	k.issue("modern", certgen.LeafOptions{CN: "sbc-modern", IPAddresses: []net.IP{net.ParseIP(modernIP)}, IsServer: true})
	pb := tlsPolicy(k, netip.AddrPortFrom(netip.MustParseAddr(backendIP), uint16(freeLoopbackPort(t, "udp"))).String())
	pbx := pb.Pool("pbx")
	pbx.Transport, pbx.TLS = "udp", nil // never reached
	ext := pb.Realm("external")
	ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "wss", Bind: sbcExtIP + ":0", Origins: []string{"*"},
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc")}})
	pb.Realms = append(pb.Realms, testpolicy.Realm{Name: "modern", Listeners: []testpolicy.Listener{
		{Transport: "tls", Bind: modernIP + ":0",
			TLS: &testpolicy.ListenerTLS{CertFile: k.file("modern"), KeyFile: k.key("modern"), MinVersion: "1.3"}},
		{Transport: "wss", Bind: modernIP + ":0", Origins: []string{"https://app.example.test"},
			TLS: &testpolicy.ListenerTLS{CertFile: k.file("modern"), KeyFile: k.key("modern"), MinVersion: "1.3"}},
	}})
	// The scanner is no trunk of realm "modern": in drop mode the gate
	// would close its connections at accept, before any handshake.
	pb.Headers = &testpolicy.Headers{UnknownSourceAction: "reject"}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})

	mtls := []string{"--certs=" + k.file("carrier"), "--pk=" + k.key("carrier")}
	for _, tc := range []struct {
		realm, transport string
		args             []string
		want             []string // protocol versions accepted
	}{
		{"external", "tls", mtls, []string{sslscan.TLSv12, sslscan.TLSv13}},
		{"external", "wss", nil, []string{sslscan.TLSv12, sslscan.TLSv13}},
		{"modern", "tls", nil, []string{sslscan.TLSv13}},
		{"modern", "wss", nil, []string{sslscan.TLSv13}},
	} {
		t.Run(tc.realm+"_"+tc.transport, func(t *testing.T) {
			addr, ok := s.ListenAddr(tc.realm, tc.transport)
			if !ok {
				t.Fatalf("no %s listener in realm %s", tc.transport, tc.realm)
			}
			r, err := sslscan.Scan(ctx, addr.String(), tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.EnabledProtocols(); !slices.Equal(got, tc.want) {
				t.Errorf("protocols accepted: %v, want %v", got, tc.want)
			}
			for _, p := range []string{sslscan.SSLv2, sslscan.SSLv3, sslscan.TLSv10, sslscan.TLSv11} {
				if !slices.ContainsFunc(r.Protocols, func(q sslscan.Protocol) bool { return q.Name == p && !q.Enabled }) {
					t.Errorf("%s not reported as tested and refused: %v", p, r.Protocols)
				}
			}
			for _, p := range tc.want {
				if len(r.CiphersFor(p)) == 0 {
					t.Errorf("no cipher suite listed for %s", p)
				}
			}
			if w := r.Weak(); w != nil {
				t.Errorf("weak: %v", w)
			}
			hs := metricSeries(s, "sbc_tls_handshakes_total", map[string]string{"realm": tc.realm, "transport": tc.transport, "side": "server"}, "result")
			if hs["handshake_failed"] == 0 || (tc.transport == "tls" && hs[tlsOK] == 0) {
				t.Errorf("the SBC did not count the scan's handshakes: %v", hs)
			}
			var suites []string
			for _, c := range r.Ciphers {
				suites = append(suites, c.Protocol+" "+c.Name)
			}
			t.Logf("%s %s: protocols %v; suites %v; handshakes %v", tc.realm, tc.transport, r.EnabledProtocols(), suites, hs)
		})
	}
}

// TestInteropTLSKamailioRegistrar: Kamailio is the pool's registrar,
// reached over mutual TLS: the pool's [pool.tls] trusts the test CA and
// checks the target's IP (127.0.0.1, in Kamailio's certificate), and
// presents the SBC's certificate, which Kamailio requires. The OPTIONS
// health check over TLS first finds nothing listening (target down), then
// Kamailio (target up); a REGISTER the carrier sends over UDP is relayed
// to Kamailio over that TLS connection, and its 200 comes back to the
// carrier. Kamailio logs the certificate it verified on each request:
// tls_cn="sbc" tls_verified=1. Without the client certificate in
// [pool.tls], Kamailio refuses the SBC's connections: the target goes
// down, and the REGISTER is answered 503 by the SBC.
func TestInteropTLSKamailioRegistrar(t *testing.T) {
	if err := kamailio.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kamailio: %v", err)
		}
		t.Skipf("kamailio: %v", err)
	}
	t.Run("mutual", func(t *testing.T) { runKamailioRegistrar(t, true) })
	t.Run("no_client_certificate", func(t *testing.T) { runKamailioRegistrar(t, false) })
}

func runKamailioRegistrar(t *testing.T, clientCert bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := newTestPKI(t)
	k.issue("kamailio", certgen.LeafOptions{CN: "kamailio", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsServer: true})
	kamTLS := netip.AddrPortFrom(loopback, uint16(freeLoopbackPort(t, "tcp")))

	pb := tlsPolicy(k, kamTLS.String())
	// The carrier is known by its address here and registers over UDP.
	pb.Trunks = []testpolicy.Trunk{{Name: "carrier", Realm: "external", Sources: []string{callerIP + "/32"},
		AllowRegister: true, RegisterDomains: []string{"example.test"}}}
	pbx := pb.Pool("pbx")
	pbx.Health = &testpolicy.Health{Interval: policy.D(500 * time.Millisecond), Timeout: policy.D(400 * time.Millisecond), Up: 1, Down: 1}
	if !clientCert {
		pbx.TLS.CertFile, pbx.TLS.KeyFile = "", ""
	}
	startKamailio := func() *kamailio.Kamailio {
		return kamailio.Start(t, kamailio.Options{
			TLS:      kamTLS,
			CertFile: k.file("kamailio"), KeyFile: k.key("kamailio"),
			CAFile: k.file("ca"), RequireClientCert: true,
		})
	}
	var kam *kamailio.Kamailio
	if !clientCert {
		kam = startKamailio() // up before the SBC's first ping
	}
	logs := &syncBuffer{}
	s := startSBC(t, pb.Parse(t), Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sbc log:\n%s", tail(logs.String(), 8000))
		}
	})
	tg := s.state.Load().pools["pbx"].targets[0]
	targetUp := func() float64 {
		return testutil.ToFloat64(s.metrics.TargetUp.WithLabelValues("pbx", kamTLS.String()))
	}

	if clientCert {
		// Nothing listens yet: the health check takes the target down.
		waitUntil(ctx, t, "the target to be down", func() bool { return !tg.isUp() && targetUp() == 0 })
		kam = startKamailio()
		waitUntil(ctx, t, "the target to be up", func() bool { return tg.isUp() && targetUp() == 1 })
		if line := kamailioRequest(t, kam, "OPTIONS"); !strings.Contains(line, `proto=tls`) || !strings.Contains(line, `tls_cn="sbc" tls_verified=1`) {
			t.Errorf("Kamailio's log of the health check: %q, want proto=tls tls_cn=\"sbc\" tls_verified=1", line)
		}
	} else {
		// Kamailio listens, but refuses the SBC's connections.
		waitUntil(ctx, t, "the target to be down", func() bool { return !tg.isUp() && targetUp() == 0 })
		if !kam.WaitLog("peer did not return a certificate", 10*time.Second) {
			t.Errorf("Kamailio did not log its refusal of the SBC's connection without a certificate")
		}
	}

	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: callerIP + ":0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ext, _ := s.ListenAddr("external", "udp")
	callID := "reg-" + newID()
	register := func(cseq int) *sip.Response {
		t.Helper()
		raw := fmt.Sprintf("REGISTER sip:example.test SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-reg%[3]s\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:1001@example.test>;tag=r%[2]d\r\n"+
			"To: <sip:1001@example.test>\r\n"+
			"Call-ID: %[4]s\r\n"+
			"CSeq: %[2]d REGISTER\r\n"+
			"Contact: <sip:1001@%[1]s>;expires=60\r\n"+
			"Content-Length: 0\r\n\r\n", c.Addr(), cseq, newID(), callID)
		if err := c.Send(ctx, []byte(raw), ext.String()); err != nil {
			t.Fatal(err)
		}
		m, err := c.WaitFor(ctx, func(m sipua.Msg) bool {
			return m.CSeqMethod() == "REGISTER" && m.Status >= 200 && strings.HasPrefix(m.Header("CSeq"), strconv.Itoa(cseq)+" ")
		})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := sip.NewParser().ParseSIP(m.Raw)
		if err != nil {
			t.Fatal(err)
		}
		return msg.(*sip.Response)
	}
	res := register(1)
	if !clientCert {
		if res.StatusCode != 503 {
			t.Errorf("REGISTER with the registrar refusing the SBC: %d %s, want 503", res.StatusCode, res.Reason)
		}
		if strings.Contains(kam.Log(), kamailio.LogPrefix+" request method=") {
			t.Errorf("a request reached Kamailio's routing over a connection without a client certificate")
		}
		// The SBC's side of those handshakes says ok over TLS 1.3: its
		// handshake is complete before the server judges the client's
		// certificate (the refusal comes as an alert on the first read).
		t.Logf("without a client certificate: target down, REGISTER answered %d; SBC client handshakes %v",
			res.StatusCode, tlsHandshakes(s, "internal", "client"))
		return
	}
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d %s, want 200 from Kamailio", res.StatusCode, res.Reason)
	}
	if ct := res.Contact(); ct == nil || ct.Address.User != "1001" || !strings.Contains(ct.Address.Host, callerIP) {
		t.Errorf("the 200 OK's Contact: %v, want the carrier's own", res.Contact())
	}
	if line := kamailioRequest(t, kam, "REGISTER"); !strings.Contains(line, `proto=tls`) || !strings.Contains(line, `tls_cn="sbc" tls_verified=1`) {
		t.Errorf("Kamailio's log of the REGISTER: %q, want proto=tls tls_cn=\"sbc\" tls_verified=1", line)
	}
	// A refresh goes the same way, on the same connection.
	if res := register(2); res.StatusCode != 200 {
		t.Fatalf("REGISTER refresh: %d %s, want 200", res.StatusCode, res.Reason)
	}
	// One TLS connection to Kamailio carried the pings and both REGISTERs.
	// (A ping sent while Kamailio was starting may have timed out in its
	// handshake: handshake_failed, never a certificate reason.)
	hs := tlsHandshakes(s, "internal", "client")
	if hs[tlsOK] != 1 || slices.ContainsFunc(slices.Collect(maps.Keys(hs)), func(r string) bool { return strings.HasPrefix(r, "cert_") }) {
		t.Errorf("client handshakes towards Kamailio: %v, want ok=1 and no certificate refusal", hs)
	}
	if n := strings.Count(kam.Log(), "request method=REGISTER proto=tls"); n != 2 {
		t.Errorf("Kamailio logged %d REGISTERs over TLS, want 2", n)
	}
	t.Logf("Kamailio: %d OPTIONS and %d REGISTERs over TLS; SBC client handshakes %v; REGISTER answered %d",
		strings.Count(kam.Log(), "request method=OPTIONS proto=tls"), strings.Count(kam.Log(), "request method=REGISTER proto=tls"),
		tlsHandshakes(s, "internal", "client"), res.StatusCode)
}

// kamailioRequest waits for Kamailio to log a request of method and
// returns its first such log line.
func kamailioRequest(t *testing.T, k *kamailio.Kamailio, method string) string {
	t.Helper()
	needle := kamailio.LogPrefix + " request method=" + method + " "
	if !k.WaitLog(needle, 10*time.Second) {
		t.Fatalf("Kamailio logged no %s", method)
	}
	for line := range strings.Lines(k.Log()) {
		if strings.Contains(line, needle) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
