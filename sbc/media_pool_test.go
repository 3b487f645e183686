package sbc

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/srtp"
)

// TestMediaPoolsSharedByRange: realms with the same media address and
// port range share one relay pool (kept sockets would otherwise split the
// range between the pools for good); a realm with another range has its
// own. closePools closes each once, and the pools refuse to allocate
// after it. The pool's idle drops are exported as the idle_port reason.
func TestMediaPoolsSharedByRange(t *testing.T) {
	lo, hi := 36000, 36099
	p := (&testpolicy.Policy{
		Realms: []testpolicy.Realm{
			{Name: "a", Listeners: []testpolicy.Listener{{Transport: "udp", Bind: "127.0.0.1:0"}},
				Media: &testpolicy.RealmMedia{IP: "127.0.0.1", Ports: []int{lo, hi}}},
			{Name: "b", Listeners: []testpolicy.Listener{{Transport: "udp", Bind: "127.0.0.1:0"}},
				Media: &testpolicy.RealmMedia{IP: "127.0.0.1", Ports: []int{lo, hi}}},
			{Name: "c", Listeners: []testpolicy.Listener{{Transport: "udp", Bind: "127.0.0.1:0"}},
				Media: &testpolicy.RealmMedia{IP: "127.0.0.1", Ports: []int{hi + 1, hi + 100}}},
		},
		Trunks: []testpolicy.Trunk{{Name: "t", Realm: "a", Sources: []string{"127.0.0.1/32"}}},
		Pools:  []testpolicy.Pool{{Name: "p", Realm: "b", Targets: testpolicy.Targets("127.0.0.1:5999")}},
	}).Parse(t)
	mp, err := newMediaPlane(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mp.pools["a"] == nil || mp.pools["a"] != mp.pools["b"] {
		t.Fatal("realms a and b (same address and range) do not share a pool")
	}
	if mp.pools["c"] == mp.pools["a"] {
		t.Fatal("realm c (another range) shares a's pool")
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(mp)
	found := false
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sbc_media_dropped_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == srtp.DropIdlePort.String() {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("no idle_port row in sbc_media_dropped_packets_total")
	}
	mp.closePools()
	mp.closePools()
	for _, r := range []string{"a", "b", "c"} {
		if _, err := mp.pools[r].Allocate(false); !errors.Is(err, srtp.ErrPoolClosed) {
			t.Fatalf("realm %s: Allocate after closePools: %v", r, err)
		}
	}
}
