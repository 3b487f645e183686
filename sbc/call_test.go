package sbc

import (
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/topology"
)

// fakeTx records what the call responds to A.
type fakeTx struct {
	sip.ServerTransaction
	mu   sync.Mutex
	sent []int
}

func (f *fakeTx) Respond(r *sip.Response) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, r.StatusCode)
	return nil
}

// sipgo hands each message to its own goroutine, so a 180 can be handled
// after the 200 it preceded on the wire: it must never reach the caller.
func params(kv ...string) sip.HeaderParams {
	p := sip.NewParams()
	for i := 0; i+1 < len(kv); i += 2 {
		p.Add(kv[i], kv[i+1])
	}
	return p
}

func TestProvisionalAfterFinalNotRelayed(t *testing.T) {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1", Host: "192.0.2.1"})
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "192.0.2.9", Port: 5060, Params: params("branch", "z9hG4bK1")})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.9"}, Params: params("tag", "a")})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.1"}, Params: params("tag", "ours")})
	cid := sip.CallIDHeader("c")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	tx := &fakeTx{}
	p := policy.Default()
	c := &call{
		aReq: req, aTx: tx,
		st: &snapshot{pol: p, headers: topology.NewHeaderFilter(p.Headers.Allow)},
		a:  &leg{ep: &endpoint{faces: map[string]topology.Face{"udp": {Transport: "udp", Host: "192.0.2.1", Port: 5060}}}, transport: "udp"},
	}
	ringing := sip.NewResponse(180, "Ringing")
	c.provisionalToA(ringing)
	c.mu.Lock()
	c.final = true // the 200 went out
	c.mu.Unlock()
	c.provisionalToA(ringing)
	if len(tx.sent) != 1 || tx.sent[0] != 180 {
		t.Fatalf("responses to A: %v, want only the 180 sent before the final", tx.sent)
	}
}
