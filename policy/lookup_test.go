package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const routed = minimal + `
[[trunk]]
name = "a"
realm = "r"
sources = ["10.0.0.0/8"]
[[trunk]]
name = "b"
realm = "r"
sources = ["10.1.0.0/16"]
[[pool]]
name = "default"
realm = "r"
target = [{ address = "127.0.0.1:5080" }]
[[pool]]
name = "any49"
realm = "r"
target = [{ address = "127.0.0.1:5081" }]
[[pool]]
name = "a49"
realm = "r"
target = [{ address = "127.0.0.1:5082" }]
[[pool]]
name = "any4930"
realm = "r"
target = [{ address = "127.0.0.1:5083" }]
[[pool]]
name = "a-all"
realm = "r"
target = [{ address = "127.0.0.1:5084" }]
[[pool]]
name = "b-emergency"
realm = "r"
target = [{ address = "127.0.0.1:5085" }]
[[route]]
prefix = "+49"
pool = "any49"
[[route]]
trunk = "a"
prefix = "+49"
pool = "a49"
[[route]]
prefix = "+4930"
pool = "any4930"
[[route]]
trunk = "a"
pool = "a-all"
[[route]]
trunk = "b"
prefix = "112"
pool = "b-emergency"
[routing]
default_pool = "default"
`

func TestRouteFor(t *testing.T) {
	p := mustParse(t, routed)
	tests := []struct {
		trunk, user, want string
	}{
		{"a", "+4930123", "any4930"}, // longer generic prefix beats shorter trunk route
		{"a", "+49891", "a49"},       // trunk route beats generic route of equal length
		{"b", "+49891", "any49"},     // routes of trunk a do not apply to b
		{"", "+49891", "any49"},      // unknown source: generic routes only
		{"a", "+33", "a-all"},        // trunk route with empty prefix
		{"b", "+33", "default"},      // nothing matches: default pool
		{"b", "112", "b-emergency"},  // exact-length match
		{"a", "112", "a-all"},
		{"b", "11", "default"}, // user shorter than the prefix
		{"a", "", "a-all"},
		{"", "", "default"},
		{"nosuchtrunk", "+4930", "any4930"},
	}
	unvalidated := *p
	unvalidated.look = nil
	for _, tc := range tests {
		for name, pol := range map[string]*Policy{"validated": p, "unvalidated": &unvalidated} {
			got := pol.RouteFor(tc.trunk, tc.user)
			if got == nil || got.Name != tc.want {
				t.Errorf("%s: RouteFor(%q, %q) = %v, want %s", name, tc.trunk, tc.user, got, tc.want)
			}
		}
	}

	noDefault := mustParse(t, strings.Replace(routed, `default_pool = "default"`, "", 1))
	if got := noDefault.RouteFor("b", "+33"); got != nil {
		t.Errorf("RouteFor without default pool = %v, want nil", got.Name)
	}
}

// TestRouteForMatchesScan compares the map-based RouteFor with the plain
// scan over random route tables and users.
func TestRouteForMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "0123"[rng.IntN(4)]
		}
		return string(b)
	}
	for round := 0; round < 50; round++ {
		var src strings.Builder
		src.WriteString(minimal)
		src.WriteString("[[trunk]]\nname = \"t0\"\nrealm = \"r\"\nsources = [\"10.0.0.0/8\"]\n")
		src.WriteString("[[trunk]]\nname = \"t1\"\nrealm = \"r\"\nsources = [\"10.1.0.0/16\"]\n")
		for i := 0; i < 4; i++ {
			fmt.Fprintf(&src, "[[pool]]\nname = \"p%d\"\nrealm = \"r\"\ntarget = [{ address = \"127.0.0.1:%d\" }]\n", i, 5080+i)
		}
		seen := map[string]bool{}
		for i := 0; i < 30; i++ {
			trunk := []string{"", "t0", "t1"}[rng.IntN(3)]
			prefix := digits(rng.IntN(5))
			if seen[trunk+"/"+prefix] {
				continue
			}
			seen[trunk+"/"+prefix] = true
			fmt.Fprintf(&src, "[[route]]\ntrunk = %q\nprefix = %q\npool = \"p%d\"\n", trunk, prefix, rng.IntN(4))
		}
		if rng.IntN(2) == 0 {
			src.WriteString("[routing]\ndefault_pool = \"p0\"\n")
		}
		p := mustParse(t, src.String())
		scan := *p
		scan.look = nil
		for i := 0; i < 200; i++ {
			trunk := []string{"", "t0", "t1", "t2"}[rng.IntN(4)]
			user := digits(rng.IntN(7))
			if a, b := p.RouteFor(trunk, user), scan.RouteFor(trunk, user); a != b {
				t.Fatalf("RouteFor(%q, %q) = %v, scan = %v\n%s", trunk, user, a, b, src.String())
			}
		}
	}
}

func TestLookupByName(t *testing.T) {
	p := mustParse(t, routed)
	unvalidated := *p
	unvalidated.look = nil
	for _, pol := range []*Policy{p, &unvalidated} {
		if r := pol.Realm("r"); r != &p.Realms[0] {
			t.Errorf("Realm(r) = %p, want %p", r, &p.Realms[0])
		}
		if tr := pol.Trunk("b"); tr != &p.Trunks[1] {
			t.Errorf("Trunk(b) = %v", tr)
		}
		if pl := pol.Pool("a49"); pl != &p.Pools[2] {
			t.Errorf("Pool(a49) = %v", pl)
		}
		if pol.Realm("x") != nil || pol.Trunk("x") != nil || pol.Pool("x") != nil {
			t.Error("lookup of an unknown name is not nil")
		}
	}
}

func TestAllowedHeader(t *testing.T) {
	p := Default()
	unvalidated := &Policy{}
	for _, pol := range []*Policy{p, unvalidated} {
		for name, want := range map[string]bool{
			"Content-Type":         true,
			"content-type":         true,
			"CONTENT-TYPE":         true,
			"c":                    true, // compact form of Content-Type
			"K":                    true, // Supported
			"o":                    true, // Event
			"P-Asserted-Identity":  true,
			"Via":                  false,
			"v":                    false,
			"Contact":              false,
			"X-Internal-Secret":    false,
			"":                     false,
			"z":                    false,
			strings.Repeat("a", 9): false,
			"Content-Type-" + strings.Repeat("x", 100): false,
		} {
			if got := pol.AllowedHeader(name); got != want {
				t.Errorf("AllowedHeader(%q) = %v, want %v (validated %v)", name, got, want, pol.look != nil)
			}
		}
	}
	long := "X-" + strings.Repeat("Long", 30)
	q := mustParse(t, minimal+"[headers]\nallow = [\""+long+"\"]\n")
	if !q.AllowedHeader(strings.ToUpper(long)) {
		t.Error("long header name not found")
	}
}

func BenchmarkRouteFor(b *testing.B) {
	var src strings.Builder
	src.WriteString(minimal)
	src.WriteString("[[trunk]]\nname = \"t\"\nrealm = \"r\"\nsources = [\"10.0.0.0/8\"]\n")
	src.WriteString("[[pool]]\nname = \"p\"\nrealm = \"r\"\ntarget = [{ address = \"127.0.0.1:5080\" }]\n")
	for i := 0; i < 1000; i++ { // 1000 routes, prefixes of 3..6 digits
		fmt.Fprintf(&src, "[[route]]\nprefix = \"+%d\"\npool = \"p\"\n", 100+i*97)
	}
	src.WriteString("[[route]]\ntrunk = \"t\"\nprefix = \"+4930\"\npool = \"p\"\n")
	p, err := Parse("bench.toml", []byte(src.String()))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("indexed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p.RouteFor("t", "+4930123456789") == nil {
				b.Fatal("no route")
			}
		}
	})
	scan := *p
	scan.look = nil
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if scan.RouteFor("t", "+4930123456789") == nil {
				b.Fatal("no route")
			}
		}
	})
}

func BenchmarkAllowedHeader(b *testing.B) {
	p := Default()
	b.ReportAllocs()
	for b.Loop() {
		if !p.AllowedHeader("P-Asserted-Identity") || p.AllowedHeader("X-Secret") {
			b.Fatal("wrong answer")
		}
	}
}

func BenchmarkParseExample(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(exampleTOML)))
	for b.Loop() {
		if _, err := Parse("bench.toml", exampleTOML); err != nil {
			b.Fatal(err)
		}
	}
}
