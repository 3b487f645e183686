package sbc

import (
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Verdicts: a stage that does not pass a request on says why and what to
// do in a verdict; act carries it out, the same way for every stage. The
// reasons are the catalogue of reasons.go.

// verdict is a stage's decision on a message it does not pass on. The
// zero verdict passes the message.
type verdict struct {
	stage  stage
	reason reason
	code   int          // SIP status of the answer
	phrase string       // reason phrase of the answer
	hdrs   []sip.Header // extra headers of the answer (Retry-After, Allow, Unsupported, …)
	fail   failure      // failure charged to the source (failNone: none)
	silent bool         // no answer: the server transaction ends without a response (not even 100 Trying)
	attrs  []any        // extra attributes of the log line, key then value
}

// pass reports whether v lets the message through.
func (v verdict) pass() bool { return v.reason == "" }

// answer is a verdict answered with code and phrase (and extra headers).
func answer(st stage, r reason, code int, phrase string, hdrs ...sip.Header) verdict {
	return verdict{stage: st, reason: r, code: code, phrase: phrase, hdrs: hdrs}
}

// silent is a verdict that sends nothing.
func silent(st stage, r reason) verdict {
	return verdict{stage: st, reason: r, silent: true}
}

// charge returns v charging failure f to the source.
func (v verdict) charge(f failure) verdict {
	v.fail = f
	return v
}

// with returns v with extra log attributes (key, value, …).
func (v verdict) with(attrs ...any) verdict {
	v.attrs = append(v.attrs, attrs...)
	return v
}

// act carries out verdict v on a request from p arriving on ep: it counts
// it in sbc_dropped_total{stage,reason}, writes a log line (rate limited),
// charges the source v.fail if any (by the trust model: never a trunk's or
// a pool target's address, see charge), and answers the request (code,
// phrase, headers) or, if v.silent, ends its transaction without a word.
//
// For what is not a request with a server transaction (a datagram or
// connection before the parser, a parse failure, a response, an ACK), req
// and tx are nil and ep may be: nothing is sent, the caller drops or
// closes what it holds. On the per-packet paths (stages filter and
// accept) act does not allocate unless the log line is let through.
func (s *SBC) act(ep *endpoint, p peer, req *sip.Request, tx sip.ServerTransaction, v verdict) {
	s.drop(v.stage, v.reason)
	answered := tx != nil && !v.silent
	if s.logAllowed(v.stage) {
		s.logVerdict(ep, p, req, v, answered)
	}
	if v.fail != failNone && p.src.IsValid() {
		s.charge(p, v.fail)
	}
	switch {
	case tx == nil:
	case v.silent:
		tx.Terminate()
	default:
		s.reject(ep, req, tx, v.code, v.phrase, v.hdrs...)
	}
}

// drop counts a dropped or rejected message under its stage and reason.
// Use act, which also logs; the call core counts with drop alone (its own
// log lines say more).
func (s *SBC) drop(st stage, r reason) {
	if i := floodIndex(st, r); i >= 0 {
		s.metrics.floodCounter(i, st, r).Inc()
		return
	}
	s.metrics.Dropped.WithLabelValues(string(st), string(r)).Inc()
}

// floodIndex numbers the drops of the read and accept filters and of
// the per-message checks on connections, which come once per packet (or
// message) in a flood: their counters are looked up once (floodCounter),
// not hashed by label on every packet. -1 for the others.
func floodIndex(st stage, r reason) int {
	for i, f := range floodDrops {
		if f.stage == st && f.reason == r {
			return i
		}
	}
	return -1
}

// floodDrops are the drops floodIndex numbers.
var floodDrops = [...]struct {
	stage  stage
	reason reason
}{
	{stageFilter, reasonBlocked}, {stageFilter, reasonSourcePPS}, {stageFilter, reasonTrunkPPS},
	{stageFilter, reasonUnknownSource}, {stageFilter, reasonTLSNeedIdentity}, {stageFilter, reasonTrunkTransport},
	{stageFilter, reasonUDPPeersFull}, {stageFilter, reasonOverload},
	{stageAccept, reasonBlocked}, {stageAccept, reasonSourcePPS}, {stageAccept, reasonTrunkPPS},
	{stageAccept, reasonUnknownSource}, {stageAccept, reasonTLSNeedIdentity}, {stageAccept, reasonTrunkTransport},
	{stageAccept, reasonSourceConnections},
	{stageAccept, reasonConnections},
	{stageStream, reasonBlocked}, {stageStream, reasonSourcePPS}, {stageStream, reasonTrunkPPS},
}

const floodCounters = len(floodDrops)

// floodCounter is the child of Dropped for floodIndex i, made on first
// use (a series appears only once it counts, like the others).
func (m *Metrics) floodCounter(i int, st stage, r reason) prometheus.Counter {
	if c := m.flood[i].Load(); c != nil {
		return *c
	}
	c := m.Dropped.WithLabelValues(string(st), string(r))
	m.flood[i].Store(&c)
	return c
}

// floodLogPerSecond bounds the log lines of the drops before the parser
// (stages filter, accept and stream), a budget of their own: a flood of spoofed
// or blocked sources cannot crowd out the pipeline's lines.
const floodLogPerSecond = 10

// logAllowed is the rate limit of drop log lines, checked before any
// attribute is built.
func (s *SBC) logAllowed(st stage) bool {
	if st == stageFilter || st == stageAccept || st == stageStream {
		// One monotonic clock read (time.Now reads two clocks).
		return s.def.floodLog.allow(int64(time.Since(monoEpoch)/time.Second), floodLogPerSecond)
	}
	return s.def.logLimit.Allow()
}

// logVerdict writes the line of a verdict: "dropped", like the counter,
// with the code of the answer when there was one.
func (s *SBC) logVerdict(ep *endpoint, p peer, req *sip.Request, v verdict, answered bool) {
	attrs := make([]any, 0, 16+len(v.attrs))
	attrs = append(attrs, "stage", string(v.stage), "reason", string(v.reason))
	if p.src.IsValid() {
		attrs = append(attrs, "source", p.src.String())
	}
	if ep != nil {
		attrs = append(attrs, "realm", ep.name)
	}
	if req != nil {
		attrs = append(attrs, "method", string(req.Method))
	}
	if v.fail != failNone {
		attrs = append(attrs, "failure", string(v.fail))
	}
	if answered {
		attrs = append(attrs, "code", v.code)
	}
	s.log.Info("dropped", append(attrs, v.attrs...)...)
}

// monoEpoch is the origin of the seconds logGate counts.
var monoEpoch = time.Now()

// logGate lets at most a given number of lines a second through, without
// a lock: on the drop path of a flood it costs two atomic loads. The zero
// logGate is ready.
type logGate struct {
	sec atomic.Int64 // the second being counted (since monoEpoch)
	n   atomic.Int64 // lines let through in it
}

func (g *logGate) allow(sec, limit int64) bool {
	if cur := g.sec.Load(); cur != sec && g.sec.CompareAndSwap(cur, sec) {
		g.n.Store(0)
	}
	if g.n.Load() >= limit {
		return false
	}
	return g.n.Add(1) <= limit
}

// reject answers a request with an SBC-generated final response. It is
// act's answer; called directly only for answers that are not drops (a
// late request in an ended dialog, a REGISTER the registrar did not
// answer).
func (s *SBC) reject(ep *endpoint, req *sip.Request, tx sip.ServerTransaction, code int, phrase string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, phrase, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	res.AppendHeader(sip.NewHeader("Server", s.state.Load().pol.Server.UserAgent))
	res.SetBody(nil)
	if err := tx.Respond(res); err != nil {
		s.log.Warn("response not sent", "realm", ep.name, "code", code, "error", err.Error())
		s.drop(stageBridge, reasonSendFailed)
	}
}
