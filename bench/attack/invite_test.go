package attack

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestInviteFlood(t *testing.T) {
	peer := newResponder(t, func(r received) [][]byte {
		if r.req == nil || r.req.Method != sip.INVITE {
			return nil
		}
		return [][]byte{reply(r.req, 100, "Trying"), reply(r.req, 503, "Service Unavailable")}
	})
	const n = 200
	rep, err := InviteFlood(testCtx(t), InviteFloodConfig{
		Target: peer.addr(), Local: local66, Count: n, SDP: true, Linger: 5 * time.Second,
		// Paced so that a small receive buffer (rmem_max) drops nothing.
		Rate: 4000,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stop != StopCount || rep.Sent != n || rep.Errors != 0 {
		t.Fatalf("report %s", rep)
	}
	if rep.Responses[100] != n || rep.Responses[503] != n || rep.Received != 2*n || rep.Unparsed != 0 {
		t.Errorf("responses %s", rep)
	}
	got := peer.all()
	if len(got) != n {
		t.Fatalf("peer got %d datagrams, want %d", len(got), n)
	}
	callIDs, tags, branches := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, r := range got {
		if r.req == nil || r.req.Method != sip.INVITE {
			t.Fatalf("not an INVITE: %q", r.raw)
		}
		if r.from.Addr() != local66.Addr() {
			t.Errorf("from %s", r.from)
		}
		ct := r.req.ContentType()
		if ct == nil || ct.Value() != "application/sdp" || !strings.HasPrefix(string(r.req.Body()), "v=0\r\n") ||
			int(*r.req.ContentLength()) != len(r.req.Body()) {
			t.Fatalf("bad SDP body: %q", r.raw)
		}
		callIDs[r.req.CallID().Value()] = true
		tag, _ := r.req.From().Params.Get("tag")
		tags[tag] = true
		branch, _ := r.req.Via().Params.Get("branch")
		branches[branch] = true
	}
	if len(callIDs) != n || len(tags) != n || len(branches) != n {
		t.Errorf("distinct Call-IDs %d, tags %d, branches %d; want %d", len(callIDs), len(tags), len(branches), n)
	}
}

func TestInviteFloodNoSDP(t *testing.T) {
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0"), Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rep, err := InviteFlood(testCtx(t), InviteFloodConfig{Target: sink.Addr(), Count: 1, To: "alice", From: "mallory", Domain: "pbx.test"})
	if err != nil || rep.Sent != 1 {
		t.Fatalf("%v %s", err, rep)
	}
	if err := sink.Wait(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	m, err := sip.ParseMessage(sink.Payloads()[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	if req.Recipient.String() != "sip:alice@pbx.test" || req.From().Address.User != "mallory" || len(req.Body()) != 0 || req.ContentType() != nil {
		t.Errorf("unexpected INVITE %s", req)
	}
}

// TestInviteFloodRate checks the pacing bound: at Rate r for a time d a
// flood sends at most floor(d·r)+1 INVITEs, however the scheduler runs.
func TestInviteFloodRate(t *testing.T) {
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	const rate, d = 400.0, 100 * time.Millisecond
	rep, err := InviteFlood(testCtx(t), InviteFloodConfig{Target: sink.Addr(), Rate: rate, Count: 1 << 20, Duration: d})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stop != StopDuration || rep.Sent < 1 || rep.Sent > int(d.Seconds()*rate)+1 {
		t.Fatalf("report %s", rep)
	}
	if err := sink.Wait(testCtx(t), rep.Sent); err != nil {
		t.Fatal(err)
	}
}

func TestInviteFloodCanceled(t *testing.T) {
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := InviteFlood(ctx, InviteFloodConfig{Target: sink.Addr(), Count: 100})
	if err != nil || rep.Stop != StopCanceled || rep.Sent != 0 {
		t.Fatalf("%v %s", err, rep)
	}
	if _, err := InviteFlood(ctx, InviteFloodConfig{Target: sink.Addr(), Count: -1}); err == nil {
		t.Error("negative count accepted")
	}
}

func TestPacerSchedule(t *testing.T) {
	for _, rate := range []float64{0.5, 1, 3, 1000, 12345.6, 1e6} {
		prev := time.Duration(-1)
		for n := 0; n < 5000; n++ {
			due := dueAt(n, rate)
			exact := float64(n) / rate * 1e9
			if float64(due) < exact || float64(due) > exact+2 || due < prev {
				t.Fatalf("rate %g: send %d due at %d ns, exact %f ns, previous %d", rate, n, due, exact, prev)
			}
			prev = due
		}
	}
	if got := dueAt(1<<40, 1e-3); got != time.Duration(math.MaxInt64) {
		t.Errorf("dueAt overflow: %d", got)
	}
}
