package sip

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/emiago/sipgo/timing"
)

type ClientTx struct {
	baseTx
	responses    chan *Response
	fsmState     func(*ClientTx, fsmInput) fsmInput // under fsmMu
	timer_a_time time.Duration                      // Current duration of timer A.
	timer_a      *timing.Timer
	timer_b      *timing.Timer
	timer_d_time time.Duration // Current duration of timer D.
	timer_d      *timing.Timer
	timer_m      *timing.Timer

	onRetransmission FnTxResponse

	// onResponse, when set (OnResponse, before Init), receives the
	// responses instead of the responses channel. fsmOut holds those the
	// FSM passed up during one spin: they are handed to onResponse after
	// fsmMu is released (deliver), so the handler may call any method of
	// the transaction. Guarded by fsmMu. The first of them is in fsmFirst
	// (one per spin, nearly always: no slice to allocate), the others in
	// fsmOut.
	onResponse FnTxResponse
	fsmFirst   *Response
	fsmOut     []*Response
	// fsmReceiving: a response is being spun (Receive). With onResponse,
	// a deletion the spin reaches (a final response over a reliable
	// transport) waits until the responses are delivered (fsmDelete), so
	// that OnTerminate never comes before the final response.
	fsmReceiving bool
	fsmDelete    bool
	// ackPending: a delayed resend of the ACK (actAckResend) is scheduled.
	ackPending bool
}

func NewClientTx(key string, origin *Request, conn Connection, logger *slog.Logger) *ClientTx {
	tx := &ClientTx{}
	tx.key = key
	// tx.conn = tpl
	tx.conn = conn
	// buffer chan - about ~10 retransmit responses
	tx.responses = make(chan *Response)
	tx.done = make(chan struct{})
	tx.log = logger

	tx.origin = origin // TODO:Due to subsequent request like ack we need to use clone to avoid races
	return tx
}

func (tx *ClientTx) Init() error {
	tx.initFSM()

	if err := tx.conn.WriteMsg(tx.origin); err != nil {
		e := fmt.Errorf("fail to write request on init req=%q: %w", tx.origin.StartLine(), err)
		return wrapTransportError(e)
	}

	reliable := IsReliable(tx.origin.Transport())
	if reliable {
		tx.mu.Lock()
		tx.timer_d_time = 0
		tx.mu.Unlock()
	} else {
		// RFC 3261 valueWrite- 17.1.1.2.
		// If an unreliable transport is being used, the client transaction MUST start timer A with a value of T1.
		// If a reliable transport is being used, the client transaction SHOULD NOT
		// start timer A (Timer A controls request retransmissions).
		// Timer A - retransmission

		tx.mu.Lock()
		tx.timer_a_time = Timer_A

		tx.timer_a = timing.AfterFuncArg(tx.timer_a_time, clientTimerA, tx)
		// The wait in the Completed state, for retransmitted final
		// responses: Timer D (32 s) for an INVITE, Timer K (T4) for any
		// other request (RFC 3261 17.1.2.2; upstream used Timer D for both,
		// keeping a non-INVITE transaction and its messages 32 s).
		tx.timer_d_time = Timer_D
		if !tx.origin.IsInvite() {
			tx.timer_d_time = Timer_K
		}
		tx.mu.Unlock()
	}

	// Timer B - timeout
	tx.mu.Lock()
	tx.timer_b = timing.AfterFuncArg(Timer_B, clientTimerB, tx)
	tx.mu.Unlock()
	if debugOn(tx.log) {
		tx.log.Debug("Client transaction initialized", "tx", tx.Key())
	}
	return nil
}

// The client transaction's timers: functions of the transaction rather
// than closures over it, so that arming one allocates its Timer only
// (fork change 36).
func clientTimerA(a any) { a.(*ClientTx).spinFsm(client_input_timer_a) }
func clientTimerB(a any) {
	a.(*ClientTx).spinFsmWithError(client_input_timer_b, fmt.Errorf("Timer_B timed out. %w", ErrTransactionTimeout))
}
func clientTimerD(a any) { a.(*ClientTx).spinFsm(client_input_timer_d) }
func clientTimerM(a any) { a.(*ClientTx).spinFsm(client_input_timer_m) }

// Initialises the correct kind of FSM based on request method.
func (tx *ClientTx) initFSM() {
	tx.fsmMu.Lock()
	if tx.origin.IsInvite() {
		tx.fsmState = (*ClientTx).inviteStateCalling
	} else {
		tx.fsmState = (*ClientTx).stateCalling
	}
	tx.fsm = tx
	tx.fsmMu.Unlock()
}

func (tx *ClientTx) fsmStep(in fsmInput) fsmInput { return tx.fsmState(tx, in) }
func (tx *ClientTx) fsmStateFunc() any            { return tx.fsmState }

func (tx *ClientTx) Responses() <-chan *Response {
	return tx.responses
}

// OnResponse makes the transaction hand each response it passes up (the
// ones Responses would carry) to f instead of the Responses channel, so
// that the caller needs no goroutine blocked on the channel. It must be set
// before Init (before the request is sent) and only once. f runs in the
// goroutine that delivered the response (with an inline transaction layer,
// the transport's read loop), after the transaction's locks are released:
// it may call the transaction's methods, but it must not block. The end of
// the transaction is reported by OnTerminate.
//
// Experimental
func (tx *ClientTx) OnResponse(f FnTxResponse) {
	tx.fsmMu.Lock()
	tx.onResponse = f
	tx.fsmMu.Unlock()
}

func (tx *ClientTx) OnRetransmission(f FnTxResponse) bool {
	tx.mu.Lock()
	if tx.closed {
		tx.mu.Unlock()
		return false
	}
	tx.registerOnResponse(f)
	tx.mu.Unlock()
	return true
}

func (tx *ClientTx) registerOnResponse(f FnTxResponse) {
	if tx.onRetransmission != nil {
		prev := tx.onRetransmission
		tx.onRetransmission = func(r *Response) {
			prev(r)
			f(r)
		}
		return
	}
	tx.onRetransmission = f
}

// Cancel cancels client transaction by sending CANCEL request
// func (tx *ClientTx) Cancel() error {
// 	tx.spinFsm(client_input_cancel)
// 	return nil
// }

func (tx *ClientTx) Terminate() {
	// select {
	// case <-tx.done:
	// 	return
	// default:
	// }

	if tx.delete(ErrTransactionTerminated) {
		tx.fsmMu.Lock()
		tx.fsmErr = ErrTransactionCanceled
		tx.fsmMu.Unlock()
	}
}

// Receive will process response in safe way and change transaction state
// NOTE: it could block while passing response to client,
// therefore running in seperate goroutine is needed
func (tx *ClientTx) Receive(res *Response) {
	var input fsmInput

	// There is no more client cancelation on transaction. It must be done by caller with seperate CANCEL request
	// and termination of current
	// if res.IsCancel() {
	// 	input = client_input_canceled
	// } else {
	switch {
	case res.IsProvisional():
		input = client_input_1xx
	case res.IsSuccess():
		input = client_input_2xx
	default:
		input = client_input_300_plus
	}
	// }

	tx.fsmMu.Lock()
	tx.fsmResp = res
	tx.fsmReceiving = true
	tx.spinFsmUnsafe(input)
	tx.fsmReceiving = false
	tx.deliverUnlock()
}

// deliverUnlock releases fsmMu, then hands the responses the spin passed
// up to onResponse, in order, then deletes the transaction if the spin
// reached that (fsmDelete).
func (tx *ClientTx) deliverUnlock() {
	first, out, f := tx.fsmFirst, tx.fsmOut, tx.onResponse
	del, err := tx.fsmDelete, tx.fsmErr
	tx.fsmFirst, tx.fsmOut, tx.fsmDelete = nil, nil, false
	tx.fsmMu.Unlock()
	if first != nil {
		f(first)
	}
	for _, r := range out {
		f(r)
	}
	if del {
		tx.delete(err)
	}
}

func (tx *ClientTx) Connection() Connection {
	return tx.conn
}

// func (tx *ClientTx) cancel() {
// 	if !tx.origin.IsInvite() {
// 		return
// 	}

// 	cancelRequest := newCancelRequest(tx.origin)
// 	if err := tx.conn.WriteMsg(cancelRequest); err != nil {
// 		tx.log.Error().
// 			Str("invite_request", tx.origin.Short()).
// 			Str("cancel_request", cancelRequest.Short()).
// 			Msgf("send CANCEL request failed: %s", err)

// 		err := wrapTransportError(err)
// 		go tx.spinFsmWithError(client_input_transport_err, err)
// 	}
// }

func (tx *ClientTx) ack() {
	resp := tx.fsmResp
	if resp == nil {
		panic("Response in ack should not be nil")
	}

	ack := newAckRequestNon2xx(tx.origin, resp, nil)
	tx.fsmAck = ack // NOTE: this could be incorect property to use but it helps preventing loops in some cases

	// https://github.com/emiago/sipgo/issues/168
	// Destination can be FQDN and we do not want to resolve this.
	// Per https://datatracker.ietf.org/doc/html/rfc3261#section-17.1.1.2
	// The ACK MUST be sent to the same address, port, and transport to which the original request was sent
	// This is only needed for UDP
	ack.raddr = tx.origin.raddr

	err := tx.conn.WriteMsg(ack)
	if err != nil {
		tx.log.Error("send ACK request failed", "tx", tx.Key(),
			slog.String("invite_request", tx.origin.Short()),
			slog.String("invite_response", resp.Short()),
			slog.String("cancel_request", ack.Short()),
		)
		err := wrapTransportError(err)
		go tx.spinFsmWithError(client_input_transport_err, err)
	}
}

func (tx *ClientTx) resend() {
	select {
	case <-tx.done:
		return
	default:
	}

	// tx.log.Debug("resend origin request")

	err := tx.conn.WriteMsg(tx.origin)
	if err != nil {
		if debugOn(tx.log) {
			tx.log.Debug("Fail to resend request", "error", err, "req", tx.origin.StartLine())
		}
		err := wrapTransportError(err)
		go tx.spinFsmWithError(client_input_transport_err, err)
	}
}

func (tx *ClientTx) delete(err error) bool {
	tx.mu.Lock()
	if tx.closed {
		tx.mu.Unlock()
		return false
	}
	tx.closed = true

	close(tx.done)
	onterm := tx.onTerminate

	if tx.timer_a != nil {
		tx.timer_a.Stop()
		tx.timer_a = nil
	}
	if tx.timer_b != nil {
		tx.timer_b.Stop()
		tx.timer_b = nil
	}
	if tx.timer_d != nil {
		tx.timer_d.Stop()
		tx.timer_d = nil
	}
	// Timer M holds the transaction (the INVITE and its 2xx) for 64*T1:
	// stopped like the others, so that Terminate lets go of it.
	if tx.timer_m != nil {
		tx.timer_m.Stop()
		tx.timer_m = nil
	}
	tx.mu.Unlock()
	// Maybe there is better way
	if onterm != nil {
		tx.onTerminate(tx.key, err)
	}

	if _, err := tx.conn.TryClose(); err != nil {
		tx.log.Info("Closing connection returned error", "error", err, "tx", tx.Key())
	}
	if debugOn(tx.log) {
		tx.log.Debug("Client transaction destroyed", "tx", tx.Key())
	}
	return true
}
