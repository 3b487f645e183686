package sbc

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// The SBC handles each datagram in the goroutine that read it
// (endpoint.go, third_party/sipgo): a handler that waited there for an
// answer read by the same socket would never get it. These tests run with
// one reader per socket, where any such wait is a deadlock.

// A REGISTER relayed to a registrar on the same realm (so the registrar's
// answer arrives on the socket the REGISTER came in on) is answered: the
// relay, which waits for the registrar, does not run in the read loop.
func TestRegisterRelayOutsideTheReadLoop(t *testing.T) {
	reg := newDigestRegistrar(t, "example.test", map[string]string{"alice": "pw-alice"})
	e := newEnv(t, envOpts{
		udpReaders: 1,
		limits:     &testpolicy.Limits{RegisterRate: new(1000)},
		edit: func(p *testpolicy.Policy) {
			p.Trunks = append(p.Trunks, testpolicy.Trunk{
				Name: "users", Realm: "external", Sources: []string{phoneUDPIP + "/32"},
				AllowRegister: true, RegisterDomains: []string{"example.test"},
			})
			// The registrar is reached from the external realm: its
			// answers come in on the external socket, like the REGISTERs.
			p.Pools = append(p.Pools, testpolicy.Pool{Name: "reg", Realm: "external", Targets: testpolicy.Targets(reg.addr),
				Health: &testpolicy.Health{Interval: policy.D(0)}})
			p.Routes = append(p.Routes, testpolicy.Route{Trunk: "users", Pool: "reg"})
		},
	})
	phone := newUserPhone(t, phoneUDPIP, false, sipua.Plan{})
	ext, _ := e.sbc.ListenAddr("external", "udp")
	// Well below the relay's own bound (64*T1): a relay stuck in the read
	// loop would only end by it.
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	res, err := phone.Register(ctx, sipua.RegisterOptions{Registrar: ext.String(), User: "alice", Domain: "example.test",
		Expires: 600, Username: "alice", Password: "pw-alice"})
	if err != nil {
		t.Fatalf("REGISTER (challenge and answer relayed on one socket read by one goroutine): %v", err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d, want 200", res.StatusCode)
	}
	if _, ok := reg.counts(); ok["alice"] != 1 {
		t.Fatalf("the registrar bound alice %d times, want 1", ok["alice"])
	}
}

// TestCallRacesStressOneReader is TestCallRacesStress (CANCELs, answers
// and BYEs crossing) with one reader per socket, so that every message is
// handled inline by the only goroutine that reads its socket; then every
// sipgo transaction must end too (the last by Timer D, 64*T1 at most,
// after its final), and no BYE or CANCEL of the SBC may still wait.
func TestCallRacesStressOneReader(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	e := callRacesStress(t, 1)
	e.eventually("no BYE or CANCEL in flight", func() bool { return e.sbc.hangups.Load() == 0 })
	deadline := time.Now().Add(64*sip.T1 + 10*time.Second)
	for {
		n := 0
		for _, ep := range e.sbc.realms {
			c, s := ep.ua.TransactionLayer().Len()
			n += c + s
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sipgo transactions left %s after the calls", n, 64*sip.T1+10*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The default readers per UDP socket: one per core, at least one, at
// most maxUDPReaders.
func TestDefaultUDPReaders(t *testing.T) {
	for procs, want := range map[int]int{0: 1, 1: 1, 2: 2, 4: 4, 8: maxUDPReaders} {
		if got := defaultUDPReaders(procs); got != want {
			t.Errorf("%d cores: %d readers per socket, want %d", procs, got, want)
		}
	}
}
