//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package sbc

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// TestMediaKernelRelayStartError: an SBC whose media.kernel_relay cannot
// be attached (here an interface that does not exist; without root, the
// program cannot even load) does not start, and says which key.
func TestMediaKernelRelayStartError(t *testing.T) {
	p := testpolicy.New(sbcExtIP, sbcIntIP, "127.0.0.2:5080")
	p.Media = &testpolicy.Media{KernelRelay: []string{"sbc-nosuch0"}}
	s, err := New(p.Parse(t), Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "media.kernel_relay") {
		t.Fatalf("Start: %v", err)
	}
}

// TestMediaKernelRelay: with media.kernel_relay on loopback, a plain call
// is anchored as without it (each side sees only the SBC's relay
// addresses, as the packets' source too), and once both legs are latched
// the SBC's in-kernel relay forwards its packets: they reach the other
// side and are counted in sbc_media_offloaded_packets_total (and in
// forwarded) of the realm they came from. Root only (the program attaches
// to this namespace's lo; it touches only the exact flows of this call).
func TestMediaKernelRelay(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SBC_REQUIRE_PRIV") == "1" {
			t.Fatal("test needs root and SBC_REQUIRE_PRIV=1")
		}
		t.Skip("test needs root (set SBC_REQUIRE_PRIV=1 to make this a failure)")
	}
	caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
	e := mediaEnv(t, backend, func(p *testpolicy.Policy) { p.Media = &testpolicy.Media{KernelRelay: []string{"lo"}} })
	call, res := e.dial(sipua.DialOptions{SDP: caller.sdp()})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	toExt, toInt := remote(t, res.Body()), remote(t, ci.Invite)
	exchange(t, caller, backend, toExt, toInt) // latches both legs (user space), then offloads
	before := gathered(t, e.sbc, "sbc_media_offloaded_packets_total", "external")
	exchange(t, caller, backend, toExt, toInt) // through the kernel: same sources seen
	if got := gathered(t, e.sbc, "sbc_media_offloaded_packets_total", "external"); got < before+3 {
		t.Errorf("offloaded packets from the caller's realm: %v before, %v after 3 more", before, got)
	}
	if got := gathered(t, e.sbc, "sbc_media_offloaded_packets_total", "internal"); got < 3 {
		t.Errorf("offloaded packets from the backend's realm: %v", got)
	}
	if off, fwd := gathered(t, e.sbc, "sbc_media_offloaded_packets_total", "external"), gathered(t, e.sbc, "sbc_media_forwarded_packets_total", "external"); off > fwd {
		t.Errorf("offloaded %v > forwarded %v", off, fwd)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}
