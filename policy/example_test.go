package policy_test

import (
	"fmt"

	"github.com/sbc-project/sbc/policy"
)

func ExampleParse() {
	src := []byte(`
[[realm]]
name = "external"
[[realm.listener]]
bind = "127.0.0.1:5060"

[[pool]]
name = "pbx"
realm = "external"
[[pool.target]]
address = "127.0.0.1:5080"

[routing]
default_pool = "pbx"
`)
	p, err := policy.Parse("sbc.toml", src)
	if err != nil {
		fmt.Println(err)
		return
	}
	pool := p.RouteFor("", "1000")
	fmt.Println(pool.Name, pool.Targets[0].Addr, pool.Health.Interval, p.Calls.MaxDuration)

	// Every problem is reported, each with its position.
	_, err = policy.Parse("sbc.toml", []byte(`
[[realm]]
name = "external"
[[realm.listener]]
bind = "127.0.0.1:5060"
transport = "sctp"

[routing]
default_pool = "pbx"
max_attempts = "3"
`))
	fmt.Println(err)
	// Output:
	// pbx 127.0.0.1:5080 5s 4h0m0s
	// sbc.toml:6:13: realm[0].listener[0].transport: transport "sctp" is not supported (want "udp", "tcp", "tls" or "wss")
	// sbc.toml:9:16: routing.default_pool: unknown pool "pbx" (none is defined)
	// sbc.toml:10:16: routing.max_attempts: expected integer, got string
}
