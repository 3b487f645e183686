//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// The flood systems (sbc-flood, sbc-xdp-flood): sbc with the max-CPS
// policy, the flood's prefix blocked through the admin API, and a flood of
// spoofed datagrams from that prefix at the SIP port (127.0.0.1) during
// every step. The flood comes from elsewhere, as an attack does: from a
// namespace of its own over a veth pair, its end in the comparison's
// namespace (floodLinkIn) standing for the NIC the Internet comes in on,
// with route_localnet so that the flood's destination is accepted. For
// sbc-xdp-flood the XDP program is attached to that end in driver mode
// (veth has a native XDP path), as on a NIC; the calls' own traffic stays
// on the namespace's lo. It once ran on lo in generic mode, which made
// every datagram of the calls too go through generic XDP, and generic XDP
// copies each packet whose headroom is short (all of lo's): with 1
// datagram/s of flood that alone cost 9 % of the calls/s (BENCHMARKS.md),
// a cost of generic mode on loopback rather than of the flood.

// The flood link's interface names: in the comparison's namespace and in
// the flood's.
const (
	floodLinkIn  = "flood0"
	floodLinkOut = "flood1"
)

// xdpTOML is the [xdp] table of sbc-xdp-flood.
func xdpTOML(pinDir string) string {
	return fmt.Sprintf("\n[xdp]\nenabled = true\ninterfaces = [%q]\nmode = \"native\"\npin_dir = %q\n", floodLinkIn, pinDir)
}

// addFloodLink makes the flood's namespace and its link into the
// comparison's namespace; done deletes the namespace (and the link with
// it).
func (h *harness) addFloodLink() (done func(), err error) {
	h.floodNS = netns.UniqueName("sbc-flood")
	if err := netns.Add(h.floodNS); err != nil {
		return nil, err
	}
	done = func() { _ = netns.Del(h.floodNS) }
	defer func() {
		if err != nil {
			done()
		}
	}()
	if err := netns.AddVeth(netns.Veth{A: netns.End{NS: h.ns, Name: floodLinkIn}, B: netns.End{NS: h.floodNS, Name: floodLinkOut}}); err != nil {
		return nil, err
	}
	// 127.0.0.1 is a martian destination on a link without
	// route_localnet; spoofed sources with no route back fail reverse
	// path filtering unless it is off (sbc-flood's datagrams must reach
	// the SBC's read filter).
	if _, err := netns.IP("netns", "exec", h.ns, "sysctl", "-qw", "net.ipv4.conf."+floodLinkIn+".route_localnet=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf."+floodLinkIn+".rp_filter=0"); err != nil {
		return nil, err
	}
	if h.floodPeer, err = netns.HardwareAddr(h.ns, floodLinkIn); err != nil {
		return nil, err
	}
	return done, nil
}

// blockFlood blocks the flood's prefix through the admin API and, for
// sbc-xdp-flood, checks that XDP is the SBC's fast path (it falls back
// to user space, saying why in its log, when the program cannot attach).
func (h *harness) blockFlood(ctx context.Context, system string) error {
	body, _ := json.Marshal(map[string]string{"prefix": floodPrefix.String(), "reason": "bench flood", "ttl": "24h"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/v1/blocklist", compareAdminPort), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+testpolicy.AdminKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := h.http.Do(req)
	if err != nil {
		return fmt.Errorf("block %s: %w", floodPrefix, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("block %s: %s", floodPrefix, res.Status)
	}
	if system != SystemSBCXDPFlood {
		return nil
	}
	m, err := ScrapeWith(ctx, h.http, h.metricsURL())
	if err != nil {
		return err
	}
	if m.ByLabel("sbc_fastpath_info", "path")["xdp"] != 1 {
		return fmt.Errorf("sbc's fast path is not XDP (sbc_fastpath_info %v): see its log", m.ByLabel("sbc_fastpath_info", "path"))
	}
	return nil
}

// unpin removes a stopped sbc-xdp-flood server's pins, which detaches its
// XDP program from the flood's link (the pinned link held it there), and
// waits (bounded) until the link has no program: the next trial, of
// whichever system, runs without it.
func (h *harness) unpin(pinDir string) {
	_ = os.RemoveAll(pinDir)
	err := waitFor(context.Background(), 5*time.Second, nil, "XDP detached from "+floodLinkIn, func() bool {
		out, err := exec.Command("ip", "-n", h.ns, "link", "show", "dev", floodLinkIn).Output()
		return err == nil && !strings.Contains(string(out), "xdp")
	})
	if err != nil && h.cfg.Progress != nil {
		fmt.Fprintf(h.cfg.Progress, "warning: %v\n", err)
	}
}

// floodDrops reads the SBC's drops of blocked sources: in user space and
// in the XDP program.
func (h *harness) floodDrops(ctx context.Context) (user, xdp float64) {
	m, err := ScrapeWith(ctx, h.http, h.metricsURL())
	if err != nil {
		return 0, 0
	}
	return m.ByLabel("sbc_dropped_total", "stage", "reason")["filter/blocked"],
		m.ByLabel("sbc_xdp_packets_total", "action")["drop_deny"]
}

// startFlood starts the flood of a flood system's step: FloodPPS
// datagrams a second at the SIP port over the flood's link, bounded by
// limit in time and count, until stop is called; stop returns what was
// sent, and why the flood could not start (the step then ran without
// it). For other systems it does nothing.
func (h *harness) startFlood(ctx context.Context, system string, limit time.Duration) (stop func() (attack.SpoofReport, error)) {
	if !isFlood(system) {
		return func() (attack.SpoofReport, error) { return attack.SpoofReport{}, nil }
	}
	fctx, cancel := context.WithCancel(ctx)
	type result struct {
		rep attack.SpoofReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := attack.SpoofedFlood(fctx, attack.SpoofedFloodConfig{
			Target:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), compareServerPort),
			Sources: floodPrefix, Mode: attack.SpoofLink, NetNS: h.floodNS, Link: floodLinkOut, LinkPeer: h.floodPeer,
			Rate: float64(h.cfg.FloodPPS), Duration: limit, Count: h.cfg.FloodPPS * int(limit.Seconds()+1),
		})
		done <- result{rep, err}
	}()
	return func() (attack.SpoofReport, error) {
		cancel()
		r := <-done
		return r.rep, r.err
	}
}

// newHarness sets up what Compare runs its trials in (the scenarios, the
// namespace, the HTTP client into it) for a test that drives steps
// itself; done deletes the namespace.
func newHarness(cfg *CompareConfig) (h *harness, done func(), err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, nil, err
	}
	h = &harness{cfg: cfg}
	if h.uacXML, h.uasXML, err = writeCompareScenarios(cfg.WorkDir); err != nil {
		return nil, nil, err
	}
	h.ns = netns.UniqueName("sbc-overload")
	if err := netns.Add(h.ns); err != nil {
		return nil, nil, err
	}
	h.http = nsHTTPClient(h.ns)
	return h, func() { h.http.CloseIdleConnections(); _ = netns.Del(h.ns) }, nil
}

// nsHTTPClient is an HTTP client whose connections are dialled inside the
// network namespace ns (the servers' admin and metrics endpoints).
func nsHTTPClient(ns string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netns.Do(ns, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}
