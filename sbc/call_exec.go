package sbc

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/events"

	"github.com/emiago/sipgo/sip"
	"github.com/emiago/sipgo/timing"
	"github.com/sbc-project/sbc/cdr"
)

// The executor: events enter through post, the transition runs under the
// call's lock, and the queued actions run after it, one at a time and in
// order, by whichever goroutine found the queue idle. Actions only send:
// anything that waits for an answer runs in a goroutine of its own that
// posts what it hears back as an event.

// post feeds an event to the call and runs the resulting actions in the
// calling goroutine. Never call it from inside a sipgo hook that holds a
// transaction lock (use postAsync).
func (c *call) post(ev event) {
	if c.enqueue(ev) {
		c.drain()
	}
}

// postAsync is post for sipgo hooks that run under sipgo's own locks
// (OnCancel, a client transaction's end): the actions run in a new
// goroutine.
func (c *call) postAsync(ev event) {
	if c.enqueue(ev) {
		go c.drainOwn()
	}
}

// enqueue runs the transition and reports whether the caller must drain
// the action queue.
func (c *call) enqueue(ev event) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.step(ev)
	if c.draining || c.qhead == len(c.queue) {
		return false
	}
	c.draining = true
	return true
}

// drain runs the queued actions in the calling goroutine, which may be
// a UDP read loop (sipgo handles each datagram where it read it): at the
// first action that may block (a send on a connection: a dial, a write
// that waits) the rest of the queue goes on in a goroutine of its own.
func (c *call) drain() { c.drainFrom(false) }

// drainOwn drains in a goroutine of the call's own, where actions may
// block.
func (c *call) drainOwn() { c.drainFrom(true) }

func (c *call) drainFrom(own bool) {
	for {
		c.mu.Lock()
		if c.qhead == len(c.queue) {
			c.draining = false
			c.releaseQueue()
			c.mu.Unlock()
			return
		}
		a := c.queue[c.qhead]
		if !own && c.blocks(&a) {
			c.mu.Unlock() // still draining: later posts only enqueue
			go c.drainOwn()
			return
		}
		c.queue[c.qhead] = action{}
		c.qhead++
		c.mu.Unlock()
		c.exec(a)
	}
}

// blocks reports whether an action may block the goroutine that runs it:
// a send over a connection (TCP, TLS, WSS) may dial, or wait for room to
// write. Over UDP nothing waits (a BYE's or CANCEL's answer comes by
// callback: doAsync). Called under c.mu.
func (c *call) blocks(a *action) bool {
	switch a.kind {
	case actRespondA:
		return c.a.transport != "udp"
	case actRespond:
		return mayBlock(a.tx)
	case actInvite:
		return a.br.leg.transport != "udp"
	case actWrite:
		return a.leg.transport != "udp"
	case actRelay:
		return a.rel.to.transport != "udp"
	}
	return false
}

// exec performs one action. It never holds c.mu.
func (c *call) exec(a action) {
	switch a.kind {
	case actRespondA:
		var err error
		switch {
		case a.retx:
			// The 2xx again, until A's ACK: by the transport layer, as
			// RFC 6026 has the accepted transaction do; sipgo's would
			// drop it silently once Timer L ended the transaction.
			err = c.a.ep.srv.WriteResponse(a.res)
		case a.tx == nil:
			return // the transaction was ended (the call is confirmed)
		default:
			err = a.tx.Respond(a.res)
		}
		if !a.res.IsProvisional() {
			c.markFinalSent()
		}
		if err != nil {
			c.logger().Warn("response to caller not sent", "status", a.res.StatusCode, "error", err.Error())
			c.s.drop(stageBridge, reasonSendFailed)
			c.post(event{kind: evADeliveryFailed, res: a.res, err: err})
		}
	case actRespond:
		err := a.tx.Respond(a.res)
		if a.sent != nil && !a.res.IsProvisional() {
			select {
			case <-a.sent:
			default:
				close(a.sent) // actions run one at a time: no double close
				endDetached(a.tx)
			}
		}
		if err != nil {
			c.logger().Warn("in-dialog response not sent", "status", a.res.StatusCode, "error", err.Error())
			c.s.drop(stageBridge, reasonSendFailed)
		}
	case actInvite:
		c.sendInvite(a.br)
	case actCancel:
		c.sendCancel2(a.br)
	case actWrite:
		if err := a.leg.ep.write(a.req, a.leg.transport, a.leg.dest()); err != nil {
			c.logger().Warn("request not sent", "method", string(a.req.Method), "leg", a.leg.name, "error", err.Error())
			c.s.drop(stageBridge, reasonSendFailed)
		}
	case actBye, actSend:
		// The goroutine holds the leg and the request, not the call: an
		// ended call is not kept alive by a BYE waiting for its answer.
		// Its answer comes by callback (doAsync), bounded by Timer F.
		s, log, l, req := c.s, c.detachedLog(), a.leg, a.req
		s.hangups.Add(1)
		m := string(req.Method)
		l.ep.doAsync(req, l.transport, l.dest(), func(res *sip.Response, err error) {
			defer s.hangups.Add(-1)
			switch {
			case err != nil:
				log.get().Warn(m+" not answered", "leg", l.name, "error", err.Error())
			case res.StatusCode >= 300 && s.log.Enabled(context.Background(), slog.LevelDebug):
				log.get().Debug(m+" refused", "leg", l.name, "status", res.StatusCode)
			}
		})
	case actRelay:
		c.sendRelay(a.rel)
	case actCloseMedia:
		for _, ms := range a.spare {
			ms.st.Close()
		}
		for _, cl := range a.closers {
			_ = cl.Close()
		}
	case actTerminateTx:
		c.mu.Lock()
		tx := a.br.tx
		c.mu.Unlock()
		if tx != nil {
			tx.Terminate()
		}
	case actLog:
		if a.warn {
			c.logger().Warn(a.msg, a.attrs...)
		} else {
			c.logger().Info(a.msg, a.attrs...)
		}
	case actTargetFailed:
		c.s.passiveHealth(a.br.pool, a.br.tgt, false)
	case actEnd:
		c.finish()
	case actBury:
		c.bury()
	case actEndTx:
		var tx interface{ Terminate() }
		if a.tx != nil {
			tx = a.tx
		}
		if a.br != nil {
			c.mu.Lock()
			if btx := a.br.tx; btx != nil {
				tx = btx
			}
			// The transaction holds the INVITE and its 2xx: the branch
			// lets go of it (a CANCEL is no longer possible).
			a.br.tx = nil
			c.mu.Unlock()
		}
		if tx != nil {
			tx.Terminate()
		}
	}
}

// sendInvite starts a branch's INVITE transaction. Its responses come by
// callback (inviteHandlers): no goroutine waits on it.
func (c *call) sendInvite(br *branch) {
	b := br.leg
	c.s.calls.put(b, c)
	_, err := b.ep.start(context.Background(), br.inv, b.transport, b.peer, c.inviteHandlers(br, b), c.inviteCreated(br, b))
	if err != nil && b.transport == "tcp" && br.pool.cfg.Transport == "udp" {
		// A large INVITE could not go over TCP: send it over UDP anyway.
		c.logger().Warn("large INVITE: TCP to target failed, sending over UDP", "target", b.peer.String(), "error", err.Error())
		c.mu.Lock()
		nb := c.newBLeg(br.pool, br.tgt, "udp")
		nb.callID, nb.localTag = b.callID, b.localTag
		inv := c.buildInvite(nb)
		br.leg, br.inv = nb, inv
		br.tx = nil
		c.mu.Unlock()
		b = nb
		_, err = b.ep.start(context.Background(), inv, b.transport, b.peer, c.inviteHandlers(br, b), c.inviteCreated(br, b))
	}
	if err != nil {
		c.mu.Lock()
		br.tx = nil
		c.mu.Unlock()
		c.logger().Warn("invite to target failed", "target", b.peer.String(), "error", err.Error())
		c.post(event{kind: evBDone, br: br, err: err})
	}
}

// inviteCreated is told of a branch's INVITE transaction before the
// INVITE is sent: the branch holds it (a response may come at once), and
// sipgo hands every 2xx after the first one (retransmissions, other
// forks) to the retransmission hook, with no lock of its own held. The
// hook finds the call through the call table, like a 2xx that comes after
// the transaction: the transaction (which lingers in sipgo) holds no
// reference to the call.
func (c *call) inviteCreated(br *branch, b *leg) func(*sip.ClientTx) {
	return func(tx *sip.ClientTx) {
		c.mu.Lock()
		br.tx = tx
		c.mu.Unlock()
		s, ep := c.s, b.ep
		tx.OnRetransmission(func(res *sip.Response) {
			s.retransmitted2xx(ep, nil, res)
		})
	}
}

// inviteHandlers turn a branch's INVITE transaction's responses and end
// into the call's events, until the final response (later 2xx come
// through the retransmission hook). A provisional response handed over
// after the final one (another read loop had it) is not passed on.
func (c *call) inviteHandlers(br *branch, b *leg) txHandlers {
	c.mu.Lock()
	aReq := c.aReq
	c.mu.Unlock()
	var final atomic.Bool
	return txHandlers{
		response: func(res *sip.Response) {
			b.ep.countResponse(res.StatusCode)
			if !c.s.validResponse(res) || final.Load() {
				return
			}
			if !res.IsProvisional() {
				if !final.CompareAndSwap(false, true) {
					return
				}
				c.s.watchResponse(c.trunk, c.src, aReq, res)
			}
			c.s.passiveHealth(br.pool, br.tgt, true) // any response: alive
			c.post(event{kind: evBResponse, br: br, res: res})
		},
		end: func(err error) {
			if final.CompareAndSwap(false, true) {
				// Possibly under the transaction's lock: the actions run
				// in a goroutine of their own.
				c.postAsync(event{kind: evBDone, br: br, err: err})
			}
		},
	}
}

// sendCancel2 sends the CANCEL of a branch's INVITE; its answer is only
// logged (the INVITE's own final response is what counts).
func (c *call) sendCancel2(br *branch) {
	c.mu.Lock()
	b, inv := br.leg, br.inv
	c.mu.Unlock()
	creq := buildCancel(inv)
	s, log := c.s, c.detachedLog()
	s.hangups.Add(1)
	b.ep.doAsync(creq, b.transport, b.peer, func(_ *sip.Response, err error) {
		defer s.hangups.Add(-1)
		if err != nil {
			log.get().Warn("CANCEL to backend not answered", "target", b.peer.String(), "error", err.Error())
		}
	})
}

// sendRelay sends a relayed in-dialog request on the other leg. Its
// responses come by callback; the relay is bounded by 64*T1 (a timer: an
// INVITE's transaction waits for its final without bound once it had a
// provisional).
func (c *call) sendRelay(rel *relay) {
	to := rel.to
	invite := rel.req.Method == sip.INVITE
	var finished atomic.Bool
	var txp atomic.Pointer[sip.ClientTx]
	bound := timing.AfterFunc(64*sip.T1, func() {
		if finished.CompareAndSwap(false, true) {
			if tx := txp.Load(); tx != nil {
				tx.Terminate()
			}
			c.post(event{kind: evRelayDone, rel: rel, err: context.DeadlineExceeded})
		}
	})
	h := txHandlers{
		response: func(res *sip.Response) {
			to.ep.countResponse(res.StatusCode)
			if !c.s.validResponse(res) || finished.Load() {
				return
			}
			if !res.IsProvisional() {
				if !finished.CompareAndSwap(false, true) {
					return
				}
				bound.Stop()
				c.post(event{kind: evRelayResponse, rel: rel, res: res})
				if !invite {
					if tx := txp.Load(); tx != nil {
						tx.Terminate()
					}
				}
				return
			}
			c.post(event{kind: evRelayResponse, rel: rel, res: res})
		},
		end: func(err error) {
			if finished.CompareAndSwap(false, true) {
				bound.Stop()
				c.postAsync(event{kind: evRelayDone, rel: rel, err: err})
			}
		},
	}
	ctx, cancel := dialContext(to.transport)
	defer cancel()
	_, err := to.ep.start(ctx, rel.out, to.transport, to.dest(), h, func(tx *sip.ClientTx) {
		txp.Store(tx)
		if invite {
			tx.OnRetransmission(func(res *sip.Response) {
				c.post(event{kind: evRelayResponse, rel: rel, res: res})
			})
		}
	})
	if err != nil {
		bound.Stop()
		if finished.CompareAndSwap(false, true) {
			c.logger().Warn("in-dialog relay failed", "method", string(rel.req.Method), "error", err.Error())
			c.post(event{kind: evRelayDone, rel: rel, err: err})
		}
	}
}

// finish is the end of a call's life as the operator sees it: the trunk's
// slot is freed, the result counted and logged; the dialogs stay findable
// for lingerFor.
func (c *call) finish() {
	c.mu.Lock()
	result, by := c.result, c.endedBy
	answered := c.answered
	var b *leg
	if c.kept != nil {
		b = c.kept.leg
	}
	media := c.media
	var rec *cdr.Record
	out := c.s.ops.Load()
	if out.wantsCDR() && !c.done.Load() {
		rec = c.cdrOf(out.node) // before the relay closes: its counters
	}
	carrier := ""
	if c.kept != nil {
		carrier = c.kept.pool.cfg.Name
	}
	c.mu.Unlock()
	if !c.done.CompareAndSwap(false, true) {
		return
	}
	if rec != nil {
		out.writeCDR(rec)
	}
	media.close()
	var mst MediaStats
	if media != nil {
		c.mu.Lock()
		mst = media.Stats()
		c.mu.Unlock()
	}
	close(c.ended)
	c.markFinalSent()
	c.release()
	c.ref.c.Store(nil)
	c.bury()
	c.s.metrics.CallsActive.Dec()
	label := result
	if !answered.IsZero() {
		label = resultAnswered
	}
	c.s.metrics.Calls.WithLabelValues(label).Inc()
	c.s.metrics.CallsEnded.WithLabelValues(result, by).Inc()
	if c.trunk != nil {
		c.s.trunkCall(c.trunk.Name, label)
	}
	if c.binding != nil {
		c.s.metrics.UserCalls.WithLabelValues(label).Inc()
	}
	if c.route != nil {
		c.s.metrics.OutboundCalls.WithLabelValues(label).Inc()
		if !answered.IsZero() {
			c.s.addMinutes(c.st, c.srcPool, c.src, time.Since(answered))
		}
	}
	if c.s.log.Enabled(context.Background(), slog.LevelInfo) {
		c.logEnded(result, label, by, carrier, b, answered, media, mst)
	}
	// After the lock, as an action: never under it.
	e := c.started
	e.Time, e.Kind, e.Reason = time.Time{}, events.CallTerminated, label
	e.Detail = map[string]string{"ended_by": by, "result": result, "pool": c.started.Detail["pool"]}
	if sp := c.started.Detail["source_pool"]; sp != "" {
		e.Detail["source_pool"] = sp
	}
	if !answered.IsZero() {
		e.Duration = time.Since(answered)
	}
	c.s.emit(e)
}

// logEnded logs the call's end ("call ended", at info): built only when
// info is on, as the call's logger is made for it (lazily) and its
// attributes box a dozen values.
func (c *call) logEnded(result, label, by, carrier string, b *leg, answered time.Time, media *callMedia, mst MediaStats) {
	attrs := []any{"result", label, "ended_by", by, "source", c.src.String(),
		"a_call_id", c.a.callID}
	if b != nil {
		attrs = append(attrs, "b_call_id", b.callID, "target", b.peer.String())
		if c.route != nil {
			attrs = append(attrs, "carrier", carrier)
		}
	}
	if !answered.IsZero() {
		attrs = append(attrs, "setup_ms", answered.Sub(c.created).Milliseconds(),
			"duration_ms", time.Since(answered).Milliseconds(), "reason", result)
	} else {
		attrs = append(attrs, "setup_ms", time.Since(c.created).Milliseconds())
	}
	if media != nil {
		// Packets per direction: from and to each side's peer.
		attrs = append(attrs, "media_a", mst.A.Encryption, "media_b", mst.B.Encryption,
			"media_from_a", mst.A.Received, "media_to_a", mst.A.Sent,
			"media_from_b", mst.B.Received, "media_to_b", mst.B.Sent,
			"media_dropped", mst.A.Dropped+mst.B.Dropped)
	}
	c.logger().Info("call ended", attrs...)
}
