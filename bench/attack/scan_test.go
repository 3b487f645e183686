package attack

import (
	"context"
	"strings"
	"testing"
	"time"
)

// scanPeer answers like a PBX that knows extension 101: OPTIONS 200 /
// REGISTER 401 for it, 100 Trying then 404 for others, and silence for
// 103.
func scanPeer(r received) [][]byte {
	if r.req == nil {
		return nil
	}
	switch toUser(r.req) {
	case "101":
		if r.req.Method == "REGISTER" {
			return [][]byte{reply(r.req, 401, "Unauthorized", `WWW-Authenticate: Digest realm="t", nonce="n"`)}
		}
		return [][]byte{reply(r.req, 200, "OK")}
	case "103":
		return nil
	}
	return [][]byte{reply(r.req, 100, "Trying"), reply(r.req, 404, "Not Found")}
}

func TestExtensionScan(t *testing.T) {
	peer := newResponder(t, scanPeer)
	rep, err := ExtensionScan(testCtx(t), ExtensionScanConfig{
		Target: peer.addr(), Local: local66,
		Last:    105,
		Methods: []string{"OPTIONS", "register"},
		Timeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stop != StopCount || rep.Sent != 12 || rep.Timeouts != 2 || rep.Errors != 0 {
		t.Fatalf("report %s", rep)
	}
	if len(rep.Results) != 12 {
		t.Fatalf("%d results", len(rep.Results))
	}
	for i, res := range rep.Results {
		wantExt := []string{"100", "101", "102", "103", "104", "105"}[i/2]
		wantMethod := []string{"OPTIONS", "REGISTER"}[i%2]
		want := 404
		switch {
		case wantExt == "101" && wantMethod == "OPTIONS":
			want = 200
		case wantExt == "101":
			want = 401
		case wantExt == "103":
			want = 0
		}
		if res.Extension != wantExt || res.Method != wantMethod || res.Status != want {
			t.Errorf("result %d = %+v, want %s %s %d", i, res, wantExt, wantMethod, want)
		}
	}
	if ex := rep.Existing(); len(ex) != 2 || ex[0].Extension != "101" || ex[1].Extension != "101" {
		t.Errorf("Existing() = %+v", ex)
	}
	if rep.Responses[100] != 8 || rep.Responses[404] != 8 || rep.Responses[200] != 1 || rep.Responses[401] != 1 {
		t.Errorf("responses %v", rep.Responses)
	}
	got := peer.all()
	if len(got) != 12 {
		t.Fatalf("peer got %d datagrams", len(got))
	}
	callIDs := map[string]bool{}
	for _, r := range got {
		if r.req == nil {
			t.Fatalf("unparsable request %q", r.raw)
		}
		if r.from.Addr() != local66.Addr() {
			t.Errorf("request from %s, want %s", r.from, local66.Addr())
		}
		if ua := r.req.GetHeader("User-Agent"); ua == nil || ua.Value() != "friendly-scanner" {
			t.Errorf("User-Agent %v", ua)
		}
		callIDs[r.req.CallID().Value()] = true
	}
	if len(callIDs) != 12 {
		t.Errorf("%d distinct Call-IDs, want 12", len(callIDs))
	}
}

func TestExtensionScanRetransmits(t *testing.T) {
	peer := newResponder(t, scanPeer)
	rep, err := ExtensionScan(testCtx(t), ExtensionScanConfig{
		Target: peer.addr(), Local: local66, First: 103, Last: 103,
		Methods: []string{"OPTIONS"}, Timeout: 30 * time.Millisecond, Retransmits: 2, UserAgent: "x-scan",
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 3 || rep.Timeouts != 1 || rep.Results[0].Status != 0 {
		t.Fatalf("report %s %+v", rep, rep.Results)
	}
	got := peer.all()
	if len(got) != 3 {
		t.Fatalf("peer got %d", len(got))
	}
	for _, r := range got {
		if string(r.raw) != string(got[0].raw) {
			t.Errorf("retransmission differs:\n%s\n%s", r.raw, got[0].raw)
		}
		if !strings.Contains(string(r.raw), "User-Agent: x-scan\r\n") {
			t.Errorf("User-Agent not set: %s", r.raw)
		}
	}
}

func TestExtensionScanWindow(t *testing.T) {
	peer := newResponder(t, scanPeer)
	rep, err := ExtensionScan(testCtx(t), ExtensionScanConfig{
		Target: peer.addr(), Local: local66, First: 200, Last: 299, Window: 16,
		Methods: []string{"OPTIONS"}, Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stop != StopCount || len(rep.Results) != 100 || rep.Timeouts != 0 {
		t.Fatalf("report %s", rep)
	}
	for _, res := range rep.Results {
		if res.Status != 404 {
			t.Fatalf("result %+v", res)
		}
	}
}

func TestExtensionScanBounds(t *testing.T) {
	silent := newResponder(t, func(received) [][]byte { return nil })
	t.Run("duration", func(t *testing.T) {
		rep, err := ExtensionScan(testCtx(t), ExtensionScanConfig{
			Target: silent.addr(), Local: local66, Last: 10000, Methods: []string{"OPTIONS"},
			Timeout: time.Second, Duration: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Stop != StopDuration || rep.Sent != 1 {
			t.Fatalf("report %s", rep)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rep, err := ExtensionScan(ctx, ExtensionScanConfig{
			Target: silent.addr(), Local: local66, Last: 10000, Timeout: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Stop != StopCanceled || rep.Sent > 1 {
			t.Fatalf("report %s", rep)
		}
	})
	for name, cfg := range map[string]ExtensionScanConfig{
		"no range":    {Target: silent.addr()},
		"reversed":    {Target: silent.addr(), First: 200, Last: 100},
		"too many":    {Target: silent.addr(), First: 1, Last: MaxScanRequests + 1},
		"bad method":  {Target: silent.addr(), Last: 101, Methods: []string{"INVITE"}},
		"no target":   {Last: 101},
		"zero port":   {Target: netipAddrPort("127.0.0.1:0"), Last: 101},
		"multicast":   {Target: netipAddrPort("224.0.0.1:5060"), Last: 101},
		"unspecified": {Target: netipAddrPort("0.0.0.0:5060"), Last: 101},
		"family":      {Target: netipAddrPort("[::1]:5060"), Local: local66, Last: 101},
	} {
		if _, err := ExtensionScan(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
