package sip

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/emiago/sipgo/timing"
)

type ServerTx struct {
	baseTx
	acks     chan *Request
	fsmState func(*ServerTx, fsmInput) fsmInput // under fsmMu
	// cancels chan *Request
	onCancel     func(r *Request)
	timer_g      *timing.Timer
	timer_g_time time.Duration
	timer_h      *timing.Timer
	timer_i      *timing.Timer
	timer_i_time time.Duration
	timer_j      *timing.Timer
	timer_j_time time.Duration
	timer_1xx    *timing.Timer
	timer_l      *timing.Timer
	reliable     bool
	detached     bool
}

func NewServerTx(key string, origin *Request, conn Connection, logger *slog.Logger) *ServerTx {
	tx := new(ServerTx)
	tx.key = key
	tx.conn = conn

	// about ~10 retransmits
	tx.acks = make(chan *Request)
	// tx.cancels = make(chan *Request)
	tx.done = make(chan struct{})
	tx.log = logger
	tx.origin = origin // NOTE: user may do some changes on this request which creates RACE
	tx.reliable = IsReliable(origin.Transport())
	return tx
}

func (tx *ServerTx) Init() error {
	tx.initFSM()

	tx.mu.Lock()
	if !tx.reliable {
		tx.timer_g_time = Timer_G
		tx.timer_i_time = Timer_I
		tx.timer_j_time = Timer_J
	}
	tx.mu.Unlock()

	// RFC 3261 - 17.2.1
	if tx.Origin().IsInvite() {
		tx.mu.Lock()
		tx.timer_1xx = timing.AfterFuncArg(Timer_1xx, serverTimer1xx, tx)
		tx.mu.Unlock()
	}
	if debugOn(tx.log) {
		tx.log.Debug("Server transaction initialized", "tx", tx.Key())
	}
	return nil
}

func (tx *ServerTx) Connection() Connection {
	return tx.conn
}

// Receive is endpoint for handling received server requests.
// NOTE: it could block while passing request to client,
// therefore running in seperate goroutine is needed
func (tx *ServerTx) Receive(req *Request) error {
	tx.mu.Lock()
	if tx.timer_1xx != nil {
		tx.timer_1xx.Stop()
		tx.timer_1xx = nil
	}
	tx.mu.Unlock()

	var input fsmInput
	switch {
	case req.Method == tx.origin.Method:
		input = server_input_request
	case req.IsAck(): // ACK for non-2xx response
		input = server_input_ack
	case req.IsCancel():
		input = server_input_cancel
	default:
		return fmt.Errorf("unexpected message error")
	}

	tx.spinFsmWithRequest(input, req)
	return nil
}

func (tx *ServerTx) Respond(res *Response) error {
	if res.IsCancel() {
		return tx.conn.WriteMsg(res)
	}

	tx.mu.Lock()
	if tx.timer_1xx != nil {
		tx.timer_1xx.Stop()
		tx.timer_1xx = nil
	}
	tx.mu.Unlock()

	var input fsmInput
	switch {
	case res.IsProvisional():
		input = server_input_user_1xx
	case res.IsSuccess():
		input = server_input_user_2xx
	default:
		input = server_input_user_300_plus
	}
	// Return the transition's result; Timer J may terminate the transaction
	// as soon as the FSM lock is released.
	return tx.spinFsmWithResponse(input, res)
}

// TryingSent tells an INVITE transaction that its TU sent a 100 Trying
// for the request itself, before the transaction existed (fork change
// 39): from the request's bytes, as soon as it was read. The transaction
// stops Timer_1xx, which would send another 100. It holds no 100 to send
// again: a retransmission of the request before the TU's next response
// gets what the TU sends for it (the SBC sends a 100 for every INVITE
// datagram it reads that way). Not for a transaction the TU responded
// on: a response goes through Respond.
func (tx *ServerTx) TryingSent() {
	tx.mu.Lock()
	if tx.timer_1xx != nil {
		tx.timer_1xx.Stop()
		tx.timer_1xx = nil
	}
	tx.mu.Unlock()
}

// Acks makes channel for sending acks. Channel is created on demand
func (tx *ServerTx) Acks() <-chan *Request {
	return tx.acks
}

func (tx *ServerTx) ackSend(r *Request) {
	select {
	case <-tx.done:
		callID := ""
		if h := r.CallID(); h != nil {
			callID = h.Value()
		}
		if debugOn(tx.log) {
			tx.log.Debug("ACK missed", "callid", callID, "tx", tx.Key())
		}
	case tx.acks <- r:
	}
}

func (tx *ServerTx) ackSendAsync(r *Request) {
	select {
	case tx.acks <- r:
		return
	default:
	}

	// Go routines should be cheap and it will prevent blocking
	go tx.ackSend(r)
}

func (tx *ServerTx) Terminate() {
	if debugOn(tx.log) {
		tx.log.Debug("Server transaction terminating", "tx", tx.Key())
	}
	if tx.delete(ErrTransactionTerminated) {
		// TODO: remove this double locking
		tx.fsmMu.Lock()
		tx.fsmErr = ErrTransactionTerminated
		tx.fsmMu.Unlock()
	}
}

// TerminateGracefully leaves finalized unreliable transactions alive for their
// retransmission timers while allowing the caller to return.
func (tx *ServerTx) TerminateGracefully() {
	if tx.reliable {
		// reliable transports have no retransmission, so it is better just to terminate
		tx.Terminate()
		return
	}

	// Check did we receive final response
	tx.fsmMu.Lock()
	finalized := tx.fsmResp != nil && !tx.fsmResp.IsProvisional()
	tx.fsmMu.Unlock()
	if !finalized {
		tx.Terminate()
		return
	}
	tx.log.Debug("Server transaction retained for timer termination")
}

// Detach tells the server (sipgo.Server) that the request handler answers
// the request after it returns: the transaction is not ended when the
// handler returns (TerminateGracefully is not called). The handler's owner
// must then send a final response or call Terminate or
// TerminateGracefully itself. It lets a handler run in the transport's
// read loop (an inline transaction layer) without waiting there for the
// answer.
//
// Experimental
func (tx *ServerTx) Detach() {
	tx.mu.Lock()
	tx.detached = true
	tx.mu.Unlock()
}

// Detached reports whether Detach was called.
func (tx *ServerTx) Detached() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.detached
}

// OnCancel is experimental
// It is racy thing if not registered after transaction creation
func (tx *ServerTx) OnCancel(f FnTxCancel) bool {
	tx.mu.Lock()
	if tx.closed {
		tx.mu.Unlock()
		return false
	}
	tx.registerOnCancel(f)
	tx.mu.Unlock()

	// Check is transaction already canceled
	// Problem is that transaction is marked canceled but not terminated yet
	// TODO move this check under single lock after removing this double locks
	if tx.Err() == ErrTransactionCanceled {
		return false
	}

	return true
}

func (tx *ServerTx) registerOnCancel(f FnTxCancel) {
	if tx.onCancel != nil {
		prev := tx.onCancel
		tx.onCancel = func(r *Request) {
			prev(r)
			f(r)
		}
		return
	}
	tx.onCancel = f
}

// The server transaction's timers: functions of the transaction rather
// than closures over it, so that arming one allocates its Timer only
// (fork change 36).
func serverTimerG(a any) { a.(*ServerTx).spinFsm(server_input_timer_g) }
func serverTimerH(a any) { a.(*ServerTx).spinFsm(server_input_timer_h) }
func serverTimerI(a any) { a.(*ServerTx).spinFsm(server_input_timer_i) }
func serverTimerJ(a any) { a.(*ServerTx).spinFsm(server_input_timer_j) }
func serverTimerL(a any) { a.(*ServerTx).spinFsm(server_input_timer_l) }

// serverTimer1xx answers 100 Trying for an INVITE the TU has not
// answered within Timer_1xx (RFC 3261 17.2.1).
func serverTimer1xx(a any) {
	tx := a.(*ServerTx)
	trying := NewResponseFromRequest(tx.Origin(), 100, "Trying", nil)
	if err := tx.Respond(trying); err != nil {
		tx.log.Error("send '100 Trying' response failed", "error", err, "tx", tx.Key())
	}
}

// Choose the right FSM init function depending on request method.
func (tx *ServerTx) initFSM() {
	tx.fsmMu.Lock()
	if tx.Origin().IsInvite() {
		tx.fsmState = (*ServerTx).inviteStateProcceeding
	} else {
		tx.fsmState = (*ServerTx).stateTrying
	}
	tx.fsm = tx
	tx.fsmMu.Unlock()
}

func (tx *ServerTx) fsmStep(in fsmInput) fsmInput { return tx.fsmState(tx, in) }
func (tx *ServerTx) fsmStateFunc() any            { return tx.fsmState }

func (tx *ServerTx) delete(err error) bool {
	tx.mu.Lock()
	if tx.closed {
		tx.mu.Unlock()
		return false
	}
	tx.closed = true
	close(tx.done)

	if tx.timer_i != nil {
		tx.timer_i.Stop()
		tx.timer_i = nil
	}
	if tx.timer_g != nil {
		tx.timer_g.Stop()
		tx.timer_g = nil
	}
	// tx.Log().Debug("transaction done")
	if tx.timer_h != nil {
		tx.timer_h.Stop()
		tx.timer_h = nil
	}
	if tx.timer_j != nil {
		tx.timer_j.Stop()
		tx.timer_j = nil
	}
	if tx.timer_1xx != nil {
		tx.timer_1xx.Stop()
		tx.timer_1xx = nil
	}
	// Timer L holds the transaction (the INVITE and its 2xx) for 64*T1:
	// stopped like the others, so that Terminate lets go of it.
	if tx.timer_l != nil {
		tx.timer_l.Stop()
		tx.timer_l = nil
	}

	key := tx.key
	onterm := tx.onTerminate
	tx.mu.Unlock()

	if debugOn(tx.log) {
		tx.log.Debug("Server transaction destroyed", "tx", key)
	}
	if onterm != nil {
		onterm(key, err)
	}

	// Release the connection reference taken at creation, same as ClientTx.delete.
	// nil-checked because some tests construct a tx with a nil conn.
	if tx.conn != nil {
		if _, err := tx.conn.TryClose(); err != nil {
			tx.log.Info("Closing connection returned error", "error", err, "tx", key)
		}
	}
	return true
}
