package policy

import (
	"strings"
	"testing"
)

// outboundBase is a policy with a PBX pool and two carrier pools.
const outboundBase = `
[[realm]]
name = "external"
  [[realm.listener]]
  bind = "127.0.0.1:5060"
[[realm]]
name = "internal"
  [[realm.listener]]
  bind = "127.0.0.1:5062"
[[pool]]
name = "pbx"
realm = "internal"
  [[pool.target]]
  address = "127.0.0.1:5080"
[[pool]]
name = "carrier-a"
realm = "external"
  [pool.auth]
  username = "acct"
  password = "pw"
  [[pool.target]]
  address = "127.0.0.1:5070"
  [[pool.target]]
  address = "127.0.0.1:5071"
  priority = 1
[[pool]]
name = "carrier-b"
realm = "external"
  [[pool.target]]
  address = "127.0.0.1:5072"
`

func TestOutboundRoutes(t *testing.T) {
	p, err := Parse("t.toml", []byte(outboundBase+`
[[outbound_route]]
prefix = "+"
pools = ["carrier-a", "carrier-b"]
[[outbound_route]]
prefix = "+44"
source_pool = "pbx"
pools = ["carrier-b"]
from_user = "+441234"
pai = "from"
max_duration = "10m"
[[outbound_route]]
prefix = "0"
strip = 1
prepend = "+44"
pools = ["carrier-a"]
[outbound]
deny_prefixes = ["+882", "+883"]
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ src, user, prefix string }{
		{"pbx", "+4420", "+44"},     // longest prefix
		{"other", "+4420", "+"},     // the +44 route names another pool
		{"pbx", "+33", "+"},         // only "+" matches
		{"pbx", "02079460000", "0"}, // national form
		{"pbx", "123", ""},          // nothing
	} {
		r := p.OutboundRouteFor(c.src, c.user)
		switch {
		case c.prefix == "" && r != nil:
			t.Errorf("%s %s: route %q, want none", c.src, c.user, r.Prefix)
		case c.prefix != "" && (r == nil || r.Prefix != c.prefix):
			t.Errorf("%s %s: route %v, want prefix %q", c.src, c.user, r, c.prefix)
		}
	}
	r := p.OutboundRouteFor("pbx", "02079460000")
	if got := r.Normalise("02079460000"); got != "+442079460000" {
		t.Errorf("Normalise = %q", got)
	}
	if r.PAI != "keep" || r.Privacy != "keep" || r.MaxDuration.Duration != DefaultMaxDuration {
		t.Errorf("defaults not applied: pai %q privacy %q max_duration %s", r.PAI, r.Privacy, r.MaxDuration.Duration)
	}
	if r := p.OutboundRouteFor("pbx", "+4420"); r.MaxDuration.Duration.Minutes() != 10 {
		t.Errorf("max_duration %s", r.MaxDuration.Duration)
	}
	if !p.Carrier("carrier-a") || !p.Carrier("carrier-b") || p.Carrier("pbx") {
		t.Error("Carrier")
	}
	if p.Outbound.MinutesWindow.Duration != DefaultMinutesWindow {
		t.Errorf("minutes_window default %s", p.Outbound.MinutesWindow.Duration)
	}
	if pl := p.Pool("carrier-a"); pl.Targets[1].Priority != 1 || pl.Auth == nil || pl.Auth.Username != "acct" {
		t.Errorf("carrier-a: %+v", pl)
	}
	if !p.AllowedHeader("Identity") {
		t.Error("Identity (RFC 8224) is not in the default header allow-list")
	}
}

func TestOutboundErrors(t *testing.T) {
	for _, c := range []struct {
		name, src string
		want      []string
	}{
		{"unknown pool", `
[[outbound_route]]
pools = ["carrier-c"]
source_pool = "nope"
`, []string{`outbound_route[0].pools[0]: unknown pool "carrier-c"`, `outbound_route[0].source_pool: unknown pool "nope"`}},
		{"no pools", `
[[outbound_route]]
prefix = "+"
`, []string{"outbound_route[0].pools: at least one carrier pool is required"}},
		{"duplicate", `
[[outbound_route]]
prefix = "+44"
pools = ["carrier-a"]
[[outbound_route]]
prefix = "+44"
pools = ["carrier-b"]
`, []string{`outbound_route[1]: duplicate outbound route for source_pool "" and prefix "+44"`}},
		{"bad values", `
[[outbound_route]]
prefix = "+44a"
pools = ["carrier-a", "carrier-a"]
strip = 5
prepend = "x"
from_user = "alice"
pai = "yes"
privacy = "all"
`, []string{"outbound_route[0].prefix: invalid prefix", "outbound_route[0].pools[1]: pool \"carrier-a\" is listed twice",
			"outbound_route[0].strip: must be between 0 and", "outbound_route[0].prepend: invalid prepend",
			"outbound_route[0].from_user: invalid caller-ID", "outbound_route[0].pai: unknown value", "outbound_route[0].privacy: unknown value"}},
		{"unreachable: source is a carrier", `
[[outbound_route]]
pools = ["carrier-a"]
[[outbound_route]]
source_pool = "carrier-a"
pools = ["carrier-b"]
`, []string{`outbound_route[1].source_pool: pool "carrier-a" is a carrier pool`}},
		{"back to the source", `
[[outbound_route]]
source_pool = "pbx"
pools = ["pbx"]
`, []string{`outbound_route[0].pools[0]: pool "pbx" is the route's source pool`}},
		{"mixed realms", `
[[outbound_route]]
source_pool = "carrier-b"
pools = ["carrier-a", "pbx"]
`, []string{`outbound_route[0].pools[1]: pool "pbx" (realm "internal"`}},
		{"unreachable: denied prefix", `
[[outbound_route]]
prefix = "+8825"
pools = ["carrier-a"]
[outbound]
deny_prefixes = ["+882"]
`, []string{`outbound_route[0].prefix: unreachable: every number of prefix "+8825" is refused`}},
		{"deny lists", `
[outbound]
deny_prefixes = ["+882", "+8821", "+882", "abc"]
premium_prefixes = []
deny_premium = true
deny_international = true
home_prefix = "44"
pool_max_calls = -1
minutes_window = "0s"
`, []string{`outbound.deny_prefixes[1]: prefixes "+8821" and "+882" overlap`, `outbound.deny_prefixes[2]: prefix "+882" is listed twice`,
			`outbound.deny_prefixes[3]: invalid number prefix "abc"`, "outbound.deny_premium: deny_premium needs premium_prefixes",
			`outbound.home_prefix: invalid home prefix "44"`, "outbound.pool_max_calls: must be between 0", "outbound.minutes_window: must be positive"}},
		{"international needs home", `
[outbound]
deny_international = true
`, []string{"outbound.deny_international: deny_international needs home_prefix"}},
		{"auth and priority", `
[[pool]]
name = "carrier-c"
realm = "external"
  [pool.auth]
  username = "a\"b"
  [[pool.target]]
  address = "127.0.0.1:5074"
  priority = 1001
`, []string{"pool[3].auth.username: a username is required", "pool[3].auth.password: a password is required", "pool[3].target[0].priority: must be between 0 and 1000"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(outboundBase+c.src))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
