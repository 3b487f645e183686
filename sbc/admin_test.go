package sbc

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// /readyz is 200 while every pool has a target that can take calls, and
// 503 naming the pools that have none; /healthz (liveness) stays 200.
func TestReadyzNamesPoolsWithoutTargetUp(t *testing.T) {
	// Pool a has two targets; pool b has one and a drained one (weight 0).
	pb := &testpolicy.Policy{
		Admin:  "127.0.0.1:0",
		Realms: []testpolicy.Realm{{Name: "external", Listeners: []testpolicy.Listener{{Bind: "127.0.0.1:0"}}}},
		Trunks: []testpolicy.Trunk{{Name: "t", Realm: "external", Sources: []string{"127.0.0.1"}}},
		Pools: []testpolicy.Pool{
			{Name: "a", Realm: "external", Targets: testpolicy.Targets("127.0.0.1:9", "127.0.0.1:10"),
				Health: &testpolicy.Health{Interval: policy.D(0)}},
			{Name: "b", Realm: "external", Targets: []testpolicy.Target{{Address: "127.0.0.1:11"}, {Address: "127.0.0.1:12", Weight: new(0)}},
				Health: &testpolicy.Health{Interval: policy.D(0)}},
		},
		Routing: &testpolicy.Routing{DefaultPool: "a"},
	}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	base := "http://" + s.AdminAddr().String()
	get := func(path string) (int, Readiness) {
		t.Helper()
		res, err := adminDo(http.MethodGet, base+path, "")
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

// adminDo sends a request to the admin API with testpolicy.AdminKey (role
// admin), and a JSON body if body is not empty.
func adminDo(method, url, body string) (*http.Response, error) {
	return adminDoKey(testpolicy.AdminKey, method, url, body)
}

func adminDoKey(key, method, url, body string) (*http.Response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	return http.DefaultClient.Do(r)
}
