package sbc

import (
	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/cdr"
	"github.com/sbc-project/sbc/srtp"
)

// Call detail records (package cdr): the call's record is built in
// finish, under the call's lock (it reads the call's state and the media
// streams' atomic counters: no I/O), and handed to the outputs after the
// lock is released (outputs.go): the CDR file's queue and the webhooks
// that take "cdr". Neither blocks.

// headerValues returns the values of every header named name.
func headerValues(m interface{ GetHeaders(string) []sip.Header }, name string) []string {
	hs := m.GetHeaders(name)
	if len(hs) == 0 {
		return nil
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Value()
	}
	return out
}

// cdrOf builds the call's record. Under c.mu, once the call ended.
func (c *call) cdrOf(node string) *cdr.Record {
	r := &cdr.Record{
		Node: node, Session: c.id, CallIDA: c.a.callID, Src: c.src.String(), Transport: c.a.transport,
		Start: c.created.UTC(), End: c.endedAt.UTC(), HangupBy: c.endedBy, SBCReason: c.result,
		SIPCode: c.aFinal, SIPReason: c.aFinalPhrase,
	}
	if c.trunk != nil {
		r.TrunkIn = c.trunk.Name
	}
	if c.pool != nil {
		r.TrunkOut = c.pool.cfg.Name
	}
	r.From, r.To, r.RURI = c.from, c.to, c.ruri
	// The B leg: the answered one, else the last one tried (its pool:
	// outbound calls fail over between carriers' pools).
	var br *branch
	switch {
	case c.kept != nil:
		br = c.kept
	case len(c.branches) > 0:
		br = c.branches[len(c.branches)-1]
	}
	if br != nil && br.leg != nil {
		r.CallIDB = br.leg.callID
		r.Target = br.leg.peer.String()
		if br.pool != nil {
			r.TrunkOut = br.pool.cfg.Name
		}
	}
	if !c.answered.IsZero() {
		a := c.answered.UTC()
		r.Answer = &a
	}
	if c.endedAt.IsZero() {
		r.End = r.Start
	}
	r.Q850, r.Q850Source = c.q850()
	if c.media != nil {
		for _, ms := range c.media.streams {
			if ms.st == nil {
				continue
			}
			st := ms.st.Stats()
			r.Media = append(r.Media, cdr.Stream{A: cdrLeg(ms.a.prof, st.A), B: cdrLeg(ms.b.prof, st.B)})
		}
	}
	r.Finish()
	return r
}

func cdrLeg(p profile, s srtp.LegStats) cdr.Leg {
	l := cdr.Leg{Encryption: p.String(), Packets: s.Packets, Bytes: s.Bytes, Forwarded: s.Forwarded}
	for _, n := range s.Dropped {
		l.Dropped += n
	}
	return l
}

// Sources of the Q.850 cause (cdr.Record.Q850Source).
const (
	q850FromReason = "reason" // a Reason header (RFC 3326) of the BYE or final response that ended the call
	q850FromSIP    = "sip"    // mapped from the final status to the caller (RFC 3398)
	q850FromEnd    = "end"    // from how the call ended (a BYE, a timer)
)

// q850 is the call's Q.850 cause and where it came from: a Reason header
// of the message that ended the call, else how it ended, else the final
// status the caller got.
func (c *call) q850() (int, string) {
	if n, ok := cdr.ParseReason(c.endReasons...); ok {
		return n, q850FromReason
	}
	if !c.answered.IsZero() {
		if c.result == resultDialogGone {
			return cdr.CauseTemporaryFailure, q850FromEnd
		}
		return cdr.CauseNormalClearing, q850FromEnd // a BYE, from either side or the SBC's
	}
	switch c.result {
	case resultCancelled:
		return cdr.CauseNormalClearing, q850FromEnd // the caller hung up before the answer
	case resultTimeout:
		// calls.ring_timeout: no answer; 19 if it rang, 18 if the
		// callee never even alerted.
		if c.alerted {
			return cdr.CauseNoAnswer, q850FromEnd
		}
		return cdr.CauseNoUserResponding, q850FromEnd
	case resultAckTimeout:
		return cdr.CauseRecoveryOnTimer, q850FromEnd // the caller never acknowledged the 2xx
	case resultUndeliverable:
		return cdr.CauseTemporaryFailure, q850FromEnd // the 2xx could not be sent to the caller
	}
	return cdr.CauseFromSIP(c.aFinal), q850FromSIP
}
