package sbc

import (
	"strconv"
	"testing"

	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// Listeners reports every listener with the port the kernel chose and the
// address advertised on it.
func TestListenersReportBoundAndAdvertisedAddresses(t *testing.T) {
	pb := &testpolicy.Policy{
		Realms: []testpolicy.Realm{
			{Name: "external", Listeners: []testpolicy.Listener{
				{Transport: "udp", Bind: "127.0.0.1:0", Advertise: "sbc.example.net"},
				{Transport: "tcp", Bind: "127.0.0.1:0", Advertise: "sbc.example.net"},
			}},
			{Name: "internal", Listeners: []testpolicy.Listener{
				{Transport: "udp", Bind: "127.0.0.1:0", Advertise: "[2001:db8::10]"},
			}},
		},
		Trunks: []testpolicy.Trunk{{Name: "t", Realm: "external", Sources: []string{"127.0.0.1"}}},
		Pools: []testpolicy.Pool{{Name: "p", Realm: "internal", Targets: testpolicy.Targets("127.0.0.1:9"),
			Health: &testpolicy.Health{Interval: policy.D(0)}}},
	}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	got := s.Listeners()
	if len(got) != 3 {
		t.Fatalf("%d listeners, want 3: %+v", len(got), got)
	}
	want := []struct{ realm, transport, host string }{
		{"external", "udp", "sbc.example.net"}, {"external", "tcp", "sbc.example.net"}, {"internal", "udp", "[2001:db8::10]"},
	}
	for i, w := range want {
		l := got[i]
		if l.Realm != w.realm || l.Transport != w.transport {
			t.Fatalf("listener %d is %s/%s, want %s/%s", i, l.Realm, l.Transport, w.realm, w.transport)
		}
		bound, ok := s.ListenAddr(l.Realm, l.Transport)
		if !ok || l.Bind != bound || l.Bind.Port() == 0 {
			t.Errorf("%s/%s: bind %s, want the bound address %s", l.Realm, l.Transport, l.Bind, bound)
		}
		// advertise without a port: the bound port
		adv := w.host + ":" + strconv.Itoa(int(bound.Port()))
		if l.Advertise != adv {
			t.Errorf("%s/%s: advertise %q, want %q", l.Realm, l.Transport, l.Advertise, adv)
		}
	}
}
