package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add(exampleTOML)
	f.Add([]byte(minimal))
	f.Add([]byte(routed))
	f.Add([]byte(""))
	f.Add([]byte("[server\n"))
	f.Add([]byte(minimal + "[[pool]]\nname = 1\nhealth = { interval = \"0s\", up = 0 }\ntarget = [{address = \"[::1]:1\", weight = 0}]\n"))
	f.Add([]byte("[[realm]]\nlistener = [{bind = \"0.0.0.0:0\", advertise = \"[::1]\"}]\n[pool.health]\n[[route]]\n"))
	f.Add([]byte("a.b.c = 1\n[x.y]\n[[z]]\n'q' = \"\\u00e9\"\nrealm = [1, [2], {a = 3}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("f.toml", data)
		if err != nil {
			if p != nil {
				t.Fatal("policy and error")
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range errs {
				if e.File != "f.toml" || e.Line < 1 || e.Col < 1 || e.Msg == "" {
					t.Fatalf("bad error %+v", e)
				}
				if e.Line > strings.Count(string(data), "\n")+1 {
					t.Fatalf("error past the end: %+v", e)
				}
			}
			return
		}
		// A valid policy is consistent.
		if len(p.Realms) == 0 {
			t.Fatal("valid policy without realms")
		}
		for _, tr := range p.Trunks {
			if p.Realm(tr.Realm) == nil || len(tr.Prefixes) != len(tr.Sources) || len(tr.Prefixes) == 0 {
				t.Fatalf("inconsistent trunk %+v", tr)
			}
		}
		for _, pl := range p.Pools {
			if p.Realm(pl.Realm) == nil || len(pl.Targets) == 0 {
				t.Fatalf("inconsistent pool %+v", pl)
			}
			for _, tg := range pl.Targets {
				if !tg.Addr.IsValid() || tg.W < 0 {
					t.Fatalf("inconsistent target %+v", tg)
				}
			}
		}
		for _, r := range p.Routes {
			if p.Pool(r.Pool) == nil || p.RouteFor(r.Trunk, r.Prefix) == nil {
				t.Fatalf("route %+v leads nowhere", r)
			}
		}
		_ = p.AllowedHeader(fmt.Sprint(len(data)))
	})
}
