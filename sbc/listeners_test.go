package sbc

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/sbc-project/sbc/policy"
)

// Listeners reports every listener with the port the kernel chose and the
// address advertised on it.
func TestListenersReportBoundAndAdvertisedAddresses(t *testing.T) {
	p, err := policy.Parse("listeners.toml", []byte(`
[admin]
listen = ""
[[realm]]
name = "external"
  [[realm.listener]]
  transport = "udp"
  bind = "127.0.0.1:0"
  advertise = "sbc.example.net"
  [[realm.listener]]
  transport = "tcp"
  bind = "127.0.0.1:0"
  advertise = "sbc.example.net"
[[realm]]
name = "internal"
  [[realm.listener]]
  transport = "udp"
  bind = "127.0.0.1:0"
  advertise = "[2001:db8::10]"
[[trunk]]
name = "t"
realm = "external"
sources = ["127.0.0.1"]
[[pool]]
name = "p"
realm = "internal"
  [[pool.target]]
  address = "127.0.0.1:9"
  [pool.health]
  interval = "0s"
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(p, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
