package sbc

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/sbc-project/sbc/policy"
)

// /readyz is 200 while every pool has a target that can take calls, and
// 503 naming the pools that have none; /healthz (liveness) stays 200.
func TestReadyzNamesPoolsWithoutTargetUp(t *testing.T) {
	p, err := policy.Parse("readyz.toml", []byte(`
[admin]
listen = "127.0.0.1:0"
[[realm]]
name = "external"
  [[realm.listener]]
  bind = "127.0.0.1:0"
[[trunk]]
name = "t"
realm = "external"
sources = ["127.0.0.1"]
[[pool]]
name = "a"
realm = "external"
  [[pool.target]]
  address = "127.0.0.1:9"
  [[pool.target]]
  address = "127.0.0.1:10"
  [pool.health]
  interval = "0s"
[[pool]]
name = "b"
realm = "external"
  [[pool.target]]
  address = "127.0.0.1:11"
  [[pool.target]]
  address = "127.0.0.1:12"
  weight = 0
  [pool.health]
  interval = "0s"
[routing]
default_pool = "a"
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
	base := "http://" + s.AdminAddr().String()
	get := func(path string) (int, Readiness) {
		t.Helper()
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var rd Readiness
		if path == "/readyz" {
			if err := json.NewDecoder(res.Body).Decode(&rd); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return res.StatusCode, rd
	}
	setUp := func(pool string, i int, up bool) {
		tg := s.state.Load().pools[pool].targets[i]
		tg.mu.Lock()
		tg.up = up
		tg.mu.Unlock()
	}

	if code, rd := get("/readyz"); code != 200 || !rd.Ready || len(rd.Down) != 0 || rd.Pools["a"] != (PoolReadiness{Targets: 2, Up: 2}) || rd.Pools["b"] != (PoolReadiness{Targets: 2, Up: 1}) {
		t.Fatalf("all up: %d %+v", code, rd)
	}
	setUp("a", 0, false) // one target of a left
	if code, rd := get("/readyz"); code != 200 || !rd.Ready || rd.Pools["a"].Up != 1 {
		t.Fatalf("a has one target up: %d %+v", code, rd)
	}
	setUp("b", 0, false) // b's only other target is drained (weight 0)
	if code, rd := get("/readyz"); code != 503 || rd.Ready || len(rd.Down) != 1 || rd.Down[0] != "b" {
		t.Fatalf("b has no target that can take calls: %d %+v", code, rd)
	}
	setUp("a", 1, false)
	if code, rd := get("/readyz"); code != 503 || len(rd.Down) != 2 || rd.Down[0] != "a" || rd.Down[1] != "b" {
		t.Fatalf("a and b down: %d %+v", code, rd)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d while not ready, want 200 (liveness)", code)
	}
	setUp("a", 1, true)
	setUp("b", 0, true)
	if code, rd := get("/readyz"); code != 200 || !rd.Ready {
		t.Fatalf("back up: %d %+v", code, rd)
	}
}
