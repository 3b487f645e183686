package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// at is a wall-clock time in zone tz.
func at(t *testing.T, tz, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOutboundRouteTimeOfDay: a route with a window is considered only
// inside it (an injected time, no clock), beats the always-on route of
// the same prefix there, and the always-on one takes over outside.
func TestOutboundRouteTimeOfDay(t *testing.T) {
	p, err := Parse("t.toml", []byte(outboundBase+`
[[outbound_route]]
prefix = "+44"
pools = ["carrier-b"]
[[outbound_route]]
prefix = "+44"
pools = ["carrier-a"]
hours = "08:00-18:00"
days = ["mon-fri"]
timezone = "Europe/London"
[[outbound_route]]
prefix = "+4420"
pools = ["carrier-a"]
hours = "22:00-06:00"
days = ["sat"]
[[outbound_route]]
prefix = "+1"
pools = ["carrier-b"]
hours = "09:00-17:00"
`))
	if err != nil {
		t.Fatal(err)
	}
	// 2026-12-07 is a Monday; London is UTC+0 in December, UTC+1 in July.
	for _, c := range []struct {
		when, tz, user string
		want           string // pool of the route, "" none
	}{
		{"2026-12-07 08:00", "Europe/London", "+447700", "carrier-a"}, // start included
		{"2026-12-07 17:59", "Europe/London", "+447700", "carrier-a"},
		{"2026-12-07 18:00", "Europe/London", "+447700", "carrier-b"}, // end excluded
		{"2026-12-07 07:59", "Europe/London", "+447700", "carrier-b"},
		{"2026-12-05 12:00", "Europe/London", "+447700", "carrier-b"}, // Saturday
		{"2026-07-06 08:30", "Europe/London", "+447700", "carrier-a"}, // BST: 07:30 UTC
		{"2026-07-06 07:30", "UTC", "+447700", "carrier-a"},           // the same instant
		{"2026-07-06 17:30", "UTC", "+447700", "carrier-b"},           // 18:30 in London
		// Past midnight, UTC: Saturday 22:00 to Sunday 06:00.
		{"2026-12-05 23:00", "UTC", "+442079", "carrier-a"},
		{"2026-12-06 05:59", "UTC", "+442079", "carrier-a"}, // Sunday morning: Saturday's window
		{"2026-12-06 06:00", "UTC", "+442079", "carrier-b"}, // the +44 route, always on
		{"2026-12-05 05:00", "UTC", "+442079", "carrier-b"}, // Saturday morning: Friday is not listed
		{"2026-12-07 23:00", "UTC", "+442079", "carrier-b"}, // Monday night
		// Only a windowed route: outside it, no route.
		{"2026-12-07 09:00", "UTC", "+1555", "carrier-b"},
		{"2026-12-07 17:00", "UTC", "+1555", ""},
	} {
		r := p.OutboundRouteAt("pbx", c.user, at(t, c.tz, c.when))
		got := ""
		if r != nil {
			got = r.Pools[0]
		}
		if got != c.want {
			t.Errorf("%s %s %s: route to %q, want %q", c.when, c.tz, c.user, got, c.want)
		}
	}
}

func TestOutboundRouteWindowErrors(t *testing.T) {
	_, err := Parse("t.toml", []byte(outboundBase+`
[[outbound_route]]
prefix = "+1"
pools = ["carrier-a"]
hours = "8:00-18:00"
[[outbound_route]]
prefix = "+2"
pools = ["carrier-a"]
hours = "08:00-08:00"
[[outbound_route]]
prefix = "+3"
pools = ["carrier-a"]
hours = "08:00-24:30"
days = ["mon", "funday", "mon"]
timezone = "Mars/Olympus"
[[outbound_route]]
prefix = "+4"
pools = ["carrier-a"]
hours = "00:00-24:00"
days = ["fri-mon"]
[[outbound_route]]
prefix = "+4"
pools = ["carrier-b"]
hours = "00:00-24:00"
days = ["fri-mon"]
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`outbound_route[0].hours: invalid hours "8:00-18:00": "8:00" is not HH:MM`,
		`outbound_route[1].hours: invalid hours "08:00-08:00": empty window`,
		`outbound_route[2].hours: invalid hours "08:00-24:30": "24:30": hour past 23`,
		`outbound_route[2].days[1]: invalid day "funday"`,
		`outbound_route[2].days[2]: day "mon" is listed twice`,
		`outbound_route[2].timezone: unknown time zone "Mars/Olympus"`,
		`outbound_route[4]: duplicate outbound route for source_pool "" and prefix "+4"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "outbound_route[3].") {
		t.Errorf("route 3 is valid (a wrapping day range, the whole day):\n%v", err)
	}
}

// TestHostNameTargets: a host-name target is accepted (not resolved by
// the load), and WithResolved replaces it by its addresses, in order,
// with its weight and priority, skipping addresses already targets.
func TestHostNameTargets(t *testing.T) {
	p, err := Parse("t.toml", []byte(outboundBase+`
[[pool]]
name = "carrier-c"
realm = "external"
  [[pool.target]]
  address = "127.0.0.1:5060"
  [[pool.target]]
  address = "SIP.Carrier.example.:5060"
  weight = 3
  priority = 2
  [[pool.target]]
  address = "other.example:5070"
[dns]
servers = ["127.0.0.1:5353", "::1"]
min_ttl = "1s"
`))
	if err != nil {
		t.Fatal(err)
	}
	c := p.Pool("carrier-c")
	if tg := c.Targets[1]; tg.Host != "sip.carrier.example" || tg.Port != 5060 || tg.Addr.IsValid() {
		t.Fatalf("host target: %+v", tg)
	}
	if hs := p.Hosts(); !slices.Equal(hs, []string{"sip.carrier.example", "other.example"}) {
		t.Errorf("Hosts() = %v", hs)
	}
	if got := p.DNS.ServerAddrs; len(got) != 2 || got[1] != netip.MustParseAddrPort("[::1]:53") {
		t.Errorf("dns servers: %v", got)
	}
	q := p.WithResolved(func(h string) []netip.Addr {
		if h == "sip.carrier.example" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
		}
		return nil // other.example: no address
	})
	var got []string
	for _, tg := range q.Pool("carrier-c").Targets {
		got = append(got, tg.Addr.String()+"/"+tg.Name+"/"+string(rune('0'+tg.W))+string(rune('0'+tg.Priority)))
	}
	want := []string{"127.0.0.1:5060//10", "127.0.0.2:5060/sip.carrier.example/32", "[::1]:5060/sip.carrier.example/32"}
	if !slices.Equal(got, want) {
		t.Errorf("resolved targets %v, want %v", got, want)
	}
	if len(p.Pool("carrier-c").Targets) != 3 || p.Pool("carrier-c").Targets[1].Host == "" {
		t.Error("WithResolved changed the policy it was given")
	}
	if q.Pool("pbx") == p.Pool("pbx") {
		t.Error("the copy's lookup points into the original")
	}

	_, err = Parse("t.toml", []byte(outboundBase+`
[[pool]]
name = "carrier-d"
realm = "external"
  [[pool.target]]
  address = "bad_name.example:5060"
  [[pool.target]]
  address = "a.example:0"
  [[pool.target]]
  address = "1.2.3.4.5:5060"
  [[pool.target]]
  address = "a.example:5060"
  [[pool.target]]
  address = "A.example:5060"
[dns]
servers = ["nameserver"]
min_ttl = "100ms"
`))
	for _, want := range []string{
		`pool[3].target[0].address: invalid address "bad_name.example:5060"`,
		`pool[3].target[1].address: invalid address "a.example:0"`,
		`pool[3].target[2].address: invalid address "1.2.3.4.5:5060"`,
		`pool[3].target[4].address: target A.example:5060 is listed twice`,
		`dns.servers[0]: invalid server "nameserver"`,
		`dns.min_ttl: must be at least 1s`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestPoolRegister(t *testing.T) {
	p, err := Parse("t.toml", []byte(outboundBase+`
[[pool]]
name = "carrier-r"
realm = "external"
  [pool.register]
  user = "+442079460000"
  [[pool.target]]
  address = "127.0.0.1:5090"
`))
	if err != nil {
		t.Fatal(err)
	}
	r := p.Pool("carrier-r").Register
	if r.ContactUser != r.User || r.Expires.Duration != DefaultRegisterExpires ||
		r.RetryMin.Duration != DefaultRegisterRetryMin || r.RetryMax.Duration != DefaultRegisterRetryMax {
		t.Errorf("defaults: %+v", r)
	}
	_, err = Parse("t.toml", []byte(outboundBase+`
[[pool]]
name = "carrier-r"
realm = "external"
  [pool.register]
  contact_user = "a b"
  domain = "bad_domain"
  expires = "1s"
  retry_min = "10m"
  retry_max = "1m"
  [[pool.target]]
  address = "127.0.0.1:5090"
`))
	for _, want := range []string{
		`pool[3].register.user: user is required`,
		`pool[3].register.contact_user: invalid user "a b"`,
		`pool[3].register.domain: invalid domain "bad_domain"`,
		`pool[3].register.expires: must be between 2s and 24h0m0s (got 1s)`,
		`pool[3].register.retry_min: retry_min 10m0s is longer than retry_max 1m0s`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// windowRoutes is a policy with windowed and always-on outbound routes.
func windowRoutes(t testing.TB) *Policy {
	p, err := Parse("t.toml", []byte(outboundBase+`
[[outbound_route]]
prefix = "+44"
pools = ["carrier-b"]
[[outbound_route]]
prefix = "+44"
pools = ["carrier-a"]
hours = "08:00-18:00"
days = ["mon-fri"]
timezone = "Europe/London"
[[outbound_route]]
prefix = "+4420"
pools = ["carrier-a"]
hours = "22:00-06:00"
`))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOutboundRouteAtAllocs: the route lookup is on the path of every
// outbound call; with time windows it still allocates nothing.
func TestOutboundRouteAtAllocs(t *testing.T) {
	p := windowRoutes(t)
	now := at(t, "UTC", "2026-12-07 10:00")
	if n := testing.AllocsPerRun(100, func() { p.OutboundRouteAt("pbx", "+442079460000", now) }); n != 0 {
		t.Fatalf("OutboundRouteAt allocates %v times", n)
	}
}

func BenchmarkOutboundRouteAt(b *testing.B) {
	p := windowRoutes(b)
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		p.OutboundRouteAt("pbx", "+442079460000", now)
	}
}
