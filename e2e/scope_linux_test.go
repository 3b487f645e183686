//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
)

// Ports of the host's other services in ns "sbc": what a blocked source
// may still reach with the default scope.
const (
	otherUDPPort = 7000 // stands for DNS, NTP, syslog…
	otherTCPPort = 2222 // stands for SSH
	mediaPort    = 20000
)

var (
	xdpSpared    = []string{"sbc_xdp_packets_total", "action", "spared"}
	xdpAllowed   = []string{"sbc_xdp_packets_total", "action", "allowed"}
	xdpRateLimit = []string{"sbc_xdp_packets_total", "action", "drop_ratelimit"}
	nftNotTrunk  = []string{"sbc_nft_not_trunk_packets_total"}
	reloadsOK    = []string{"sbc_reload_total", "result", "ok"}
)

// TestXDPScope blocks the attacker and checks that, with the default
// xdp.scope ("sip"), XDP drops its SIP and what it sends to the media
// relay's ports (exact counts) while its other traffic to the host gets
// through: a UDP datagram to another port, a TCP connection to a non-SIP
// port, an ICMP echo (counted "spared"). After a reload to scope "host"
// the same traffic is dropped. Trunk calls complete throughout.
func TestXDPScope(t *testing.T) {
	tn := newTestNet(t)
	pinDir := filepath.Join(mountBPFFS(t), "sbc")
	opts := policyOpts{
		stateDir: t.TempDir(),
		xdp:      true, xdpIfaces: []string{tn.sbcIf}, xdpMode: "generic", pinDir: pinDir,
	}
	cfg := writePolicy(t, opts)
	startUAS(t, tn)
	s := startSBC(t, tn, cfg)
	if _, ok := s.logLine("xdp fast path attached", `"scope":"sip"`, `"media_ports":"20000-39999`); !ok {
		t.Fatal("no log line saying XDP is attached with scope sip and the media ports")
	}
	// The default media range overlaps the namespace's ephemeral ports.
	if _, ok := s.logLine("ephemeral ports", "32768-39999"); !ok {
		t.Error("no WARN about media ports that are also ephemeral ports")
	}
	recv := tn.udpReceiver(t, otherUDPPort)
	tn.tcpListener(t, otherTCPPort)

	tn.block(t, attackPrefix, "e2e scope", "10m")
	waitDenied(t, pinDir, attackPrefix, true)

	const n = 50
	before := tn.metrics(t)
	// Not the SBC's: passes.
	tn.sendUDP(t, attackIP, otherUDPPort, n)
	if !recv.wait(attackIP, n) {
		t.Fatalf("scope sip: %d of %d datagrams to port %d from the blocked source arrived", recv.count(attackIP), n, otherUDPPort)
	}
	if err := tn.dialTCP(attackIP, otherTCPPort, 5*time.Second); err != nil {
		t.Fatalf("scope sip: TCP to port %d from the blocked source: %v", otherTCPPort, err)
	}
	if err := tn.ping(attackIP, 5*time.Second); err != nil {
		t.Fatalf("scope sip: ICMP echo from the blocked source: %v", err)
	}
	// The SBC's: dropped, SIP and media.
	tn.sendOptions(t, attackIP, n, "e2e-attacker")
	tn.sendUDP(t, attackIP, mediaPort, n)
	tn.waitMetric(t, "scope sip: deny drops", xdpDeny, func(v float64) bool { return v >= before.get(xdpDeny)+2*n })
	tn.callsComplete(t, 2)
	after := tn.metrics(t)
	if d := after.get(xdpDeny) - before.get(xdpDeny); d != 2*n {
		t.Errorf("scope sip: drop_deny rose by %v, want exactly %d (the OPTIONS and the media datagrams)", d, 2*n)
	}
	if d := after.get(attackSeen) - before.get(attackSeen); d != 0 {
		t.Errorf("scope sip: %v OPTIONS from the blocked source reached the SBC", d)
	}
	// n datagrams, at least a SYN and the final ACK, an echo request.
	if d := after.get(xdpSpared) - before.get(xdpSpared); d < n+3 {
		t.Errorf("scope sip: spared rose by %v, want at least %d", d, n+3)
	}
	t.Logf("scope sip: drop_deny +%v, spared +%v", after.get(xdpDeny)-before.get(xdpDeny), after.get(xdpSpared)-before.get(xdpSpared))

	// Reload with scope "host".
	opts.xdpScope, opts.path = "host", cfg
	writePolicy(t, opts)
	s.reload(t)

	before = tn.metrics(t)
	had := recv.count(attackIP)
	tn.sendUDP(t, attackIP, otherUDPPort, n)
	// A datagram from the trunk sent after them arrives after them.
	tn.sendUDP(t, trunkIP, otherUDPPort, 1)
	if !recv.wait(trunkIP, 1) {
		t.Fatal("scope host: the trunk's datagram did not arrive")
	}
	if got := recv.count(attackIP) - had; got != 0 {
		t.Errorf("scope host: %d datagrams to port %d from the blocked source arrived", got, otherUDPPort)
	}
	if err := tn.dialTCP(attackIP, otherTCPPort, 300*time.Millisecond); err == nil {
		t.Error("scope host: TCP to a non-SIP port from the blocked source connected")
	}
	if err := tn.ping(attackIP, 300*time.Millisecond); err == nil {
		t.Error("scope host: ICMP echo from the blocked source answered")
	}
	tn.callsComplete(t, 2)
	after = tn.metrics(t)
	if d := after.get(xdpDeny) - before.get(xdpDeny); d < n+2 {
		t.Errorf("scope host: drop_deny rose by %v, want at least %d", d, n+2)
	}
	if d := after.get(xdpSpared) - before.get(xdpSpared); d != 0 {
		t.Errorf("scope host: spared rose by %v, want 0", d)
	}
}

// TestXDPRateLimitSparesBackends runs XDP with a per-source limit of one
// packet a second and the backend across the veth: calls between the trunk
// and the backend (pool target) complete and nothing of theirs is limited
// (the allow-list holds trunks and pool targets), while a stranger's burst
// is.
func TestXDPRateLimitSparesBackends(t *testing.T) {
	tn := newTestNet(t)
	pinDir := filepath.Join(mountBPFFS(t), "sbc")
	cfg := writePolicy(t, policyOpts{
		xdp: true, xdpIfaces: []string{tn.sbcIf}, xdpMode: "generic", pinDir: pinDir,
		ratePPS: 1, burst: 1, backendOnVeth: true,
	})
	startUASAt(t, tn.peerNS, backendIP)
	startSBC(t, tn, cfg)

	before := tn.metrics(t)
	tn.callsComplete(t, 5)
	after := tn.metrics(t)
	if d := after.get(xdpRateLimit) - before.get(xdpRateLimit); d != 0 {
		t.Errorf("drop_ratelimit rose by %v during trunk calls to a backend on the veth, want 0", d)
	}
	// Each call: the INVITE, ACK and BYE of the trunk, at least the 200s
	// of the backend, all exempt.
	if d := after.get(xdpAllowed) - before.get(xdpAllowed); d < 5*5 {
		t.Errorf("allowed rose by %v, want at least %d", d, 5*5)
	}
	// The limiter is on: a stranger's burst is limited.
	tn.sendOptions(t, attackIP, 20, "e2e-stranger")
	tn.waitMetric(t, "a stranger rate-limited", xdpRateLimit, func(v float64) bool { return v > after.get(xdpRateLimit) })
}

// TestNftablesTrunksOnly runs nftables with trunks_only: the backend's
// answers (from the pool target to the internal realm's port) get in, so
// trunk calls complete, while SIP from a source that is neither a trunk nor
// a pool target is dropped by the table (exact count) and never reaches
// the SIP stack.
func TestNftablesTrunksOnly(t *testing.T) {
	tn := newTestNet(t)
	requireTools(t, "nft")
	table := fmt.Sprintf("e2e%d_%d", os.Getpid()%1000000, netSeq.Load())
	cfg := writePolicy(t, policyOpts{
		pinDir: filepath.Join(t.TempDir(), "no-pins"),
		nft:    true, nftTable: table, trunksOnly: true,
	})
	startUAS(t, tn)
	startSBC(t, tn, cfg)

	list := nftList(t, tn, table)
	set := regexp.MustCompile(`(?s)set trunks4 \{.*?\n\s*\}`).FindString(list)
	for _, a := range []string{trunkIP, "127.0.0.1"} {
		if !strings.Contains(set, a) {
			t.Errorf("set trunks4 lacks %s:\n%s", a, set)
		}
	}
	if media := regexp.MustCompile(`(?s)set media_udp \{.*?\n\s*\}`).FindString(list); !strings.Contains(media, "20000-39999") {
		t.Errorf("set media_udp lacks the relay range 20000-39999:\n%s", media)
	}
	tn.callsComplete(t, 3)

	const n = 50
	before := tn.metrics(t)
	tn.sendOptions(t, attackIP, n, "e2e-stranger")
	tn.waitMetric(t, "not_trunk drops", nftNotTrunk, func(v float64) bool { return v >= before.get(nftNotTrunk)+n })
	tn.callsComplete(t, 2)
	after := tn.metrics(t)
	if d := after.get(nftNotTrunk) - before.get(nftNotTrunk); d != n {
		t.Errorf("sbc_nft_not_trunk_packets_total rose by %v, want exactly %d", d, n)
	}
	if d := after.get(attackSeen) - before.get(attackSeen); d != 0 {
		t.Errorf("the SIP stack received %v OPTIONS from a stranger", d)
	}
}

// ---- helpers ----

// reload sends SIGHUP and waits for a successful reload.
func (p *sbcProc) reload(t testing.TB) {
	t.Helper()
	before := p.tn.metrics(t).get(reloadsOK)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.tn.waitMetric(t, "policy reloaded", reloadsOK, func(v float64) bool { return v > before })
}

// udpRecv counts datagrams per source address on a socket in ns "sbc".
type udpRecv struct {
	mu     sync.Mutex
	got    map[string]int
	notify chan struct{}
}

func (tn *testNet) udpReceiver(t testing.TB, port int) *udpRecv {
	t.Helper()
	r := &udpRecv{got: map[string]int{}, notify: make(chan struct{}, 1)}
	var c *net.UDPConn
	if err := netns.Do(tn.sbcNS, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(sbcIP), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.got[from.Addr().Unmap().String()]++
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

func (r *udpRecv) count(src string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[src]
}

// wait waits (at most waitTimeout) until n datagrams from src arrived.
func (r *udpRecv) wait(src string, n int) bool {
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for r.count(src) < n {
		select {
		case <-r.notify:
		case <-deadline.C:
			return r.count(src) >= n
		}
	}
	return true
}

// sendUDP sends n datagrams from src in ns "peer" to sbcIP:port.
func (tn *testNet) sendUDP(t testing.TB, src string, port, n int) {
	t.Helper()
	c := tn.udpFrom(t, src, port)
	defer c.Close()
	for i := range n {
		if _, err := c.Write([]byte(fmt.Sprintf("e2e datagram %d", i))); err != nil {
			t.Fatalf("send to port %d from %s: %v", port, src, err)
		}
	}
}

// tcpListener accepts (and closes) connections on sbcIP:port in ns "sbc".
func (tn *testNet) tcpListener(t testing.TB, port int) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(tn.sbcNS, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", sbcIP, port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

// dialTCP connects from src in ns "peer" to sbcIP:port within timeout.
func (tn *testNet) dialTCP(src string, port int, timeout time.Duration) error {
	return netns.Do(tn.peerNS, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.DialContext(ctx, "tcp4", fmt.Sprintf("%s:%d", sbcIP, port))
		if err == nil {
			_ = c.Close()
		}
		return err
	})
}

// ping sends one ICMP echo request from src in ns "peer" to sbcIP and
// waits for the reply within timeout.
func (tn *testNet) ping(src string, timeout time.Duration) error {
	var c net.PacketConn
	if err := netns.Do(tn.peerNS, func() error {
		var err error
		c, err = net.ListenPacket("ip4:icmp", src)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid()) ^ uint16(msgSeq.Add(1))
	echo := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'e', '2', 'e', '!'}
	var sum uint32
	for i := 0; i < len(echo); i += 2 {
		sum += uint32(echo[i])<<8 | uint32(echo[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	echo[2], echo[3] = byte(^sum>>8), byte(^sum)
	dst := netip.MustParseAddr(sbcIP)
	if _, err := c.WriteTo(echo, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		// A raw ICMP socket sees every ICMP message of the namespace.
		if ip, ok := from.(*net.IPAddr); ok && ip.IP.Equal(dst.AsSlice()) && n >= 8 &&
			buf[0] == 0 && buf[4] == byte(id>>8) && buf[5] == byte(id) {
			return nil
		}
	}
}
