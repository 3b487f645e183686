package attack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxScanRequests bounds the transactions of one ExtensionScan
// (extensions × methods).
const MaxScanRequests = 100000

// ExtensionScanConfig configures ExtensionScan.
type ExtensionScanConfig struct {
	// Target is where every request goes (required).
	Target netip.AddrPort
	// Local is the address and port to send from; an unset address means
	// any address of the target's family, port 0 an ephemeral port.
	Local netip.AddrPort
	// Domain is the host part of the URIs; default the target address.
	Domain string
	// First and Last bound the extensions scanned, inclusive: First
	// defaults to 100 (0 means the default), Last is required and must be
	// >= First.
	First, Last int
	// Methods are sent to each extension in turn, each its own
	// transaction: "OPTIONS" and/or "REGISTER". Default REGISTER (as
	// SIPVicious svwar does).
	Methods []string
	// UserAgent is the User-Agent header; default "friendly-scanner".
	UserAgent string
	// Timeout is how long a transaction waits for a final response
	// before it is retransmitted or given up; default 500ms.
	Timeout time.Duration
	// Retransmits is how many times an unanswered request is sent again
	// (after each Timeout); default 0.
	Retransmits int
	// Window is how many transactions may be outstanding at once;
	// default 1 (one extension after the other), at most 256.
	Window int
	// Duration bounds the whole scan; default 30s.
	Duration time.Duration
}

// ScanResult is the outcome of one scan transaction.
type ScanResult struct {
	Extension string
	Method    string
	// Status is the final status code received, 0 when none came.
	Status int
}

// ScanReport is the outcome of an ExtensionScan.
type ScanReport struct {
	Report
	// Results has one entry per transaction sent, in send order.
	Results []ScanResult
}

// Existing returns the results that suggest the extension exists: a
// final response other than 404. (A target answering everything alike,
// e.g. 403 to unknown sources, makes every extension look the same.)
func (r ScanReport) Existing() []ScanResult {
	var out []ScanResult
	for _, res := range r.Results {
		if res.Status != 0 && res.Status != 404 {
			out = append(out, res)
		}
	}
	return out
}

func (c *ExtensionScanConfig) defaults() error {
	if c.First == 0 && c.Last == 0 {
		return errors.New("attack: ExtensionScan needs Last (the last extension)")
	}
	if c.First == 0 {
		c.First = 100
	}
	if c.First < 0 || c.Last < c.First {
		return fmt.Errorf("attack: bad extension range %d..%d", c.First, c.Last)
	}
	methods := []string{"REGISTER"}
	if len(c.Methods) > 0 {
		methods = make([]string, len(c.Methods))
	}
	for i, m := range c.Methods {
		m = strings.ToUpper(m)
		if m != "OPTIONS" && m != "REGISTER" {
			return fmt.Errorf("attack: ExtensionScan method %q: want OPTIONS or REGISTER", m)
		}
		methods[i] = m
	}
	c.Methods = methods
	if n := (c.Last - c.First + 1) * len(c.Methods); n > MaxScanRequests || n <= 0 {
		return fmt.Errorf("attack: %d scan requests, more than %d", n, MaxScanRequests)
	}
	if c.UserAgent == "" {
		c.UserAgent = defaultUserAgent
	}
	if c.Timeout <= 0 {
		c.Timeout = 500 * time.Millisecond
	}
	if c.Retransmits < 0 {
		c.Retransmits = 0
	}
	if c.Window <= 0 {
		c.Window = 1
	}
	if c.Window > 256 {
		c.Window = 256
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	return nil
}

// scanTx is one outstanding scan transaction.
type scanTx struct {
	result   int // index into Results
	method   string
	msg      []byte
	sends    int
	deadline time.Time
}

// ExtensionScan probes the extensions First..Last of the target,
// SIPVicious-style: one OPTIONS or REGISTER transaction per extension and
// method, "friendly-scanner" User-Agent, a short wait for the answer and
// no retransmissions unless asked. It is bounded by the range (at most
// MaxScanRequests transactions) and by Duration. The error is non-nil
// only when the scan could not start.
func ExtensionScan(ctx context.Context, cfg ExtensionScanConfig) (ScanReport, error) {
	var rep ScanReport
	if err := cfg.defaults(); err != nil {
		return rep, err
	}
	conn, err := dialUDP(cfg.Local, cfg.Target)
	if err != nil {
		return rep, err
	}
	start := time.Now()
	end := deadlineOf(ctx, start, cfg.Duration)
	col := startCollector(conn, true)
	local := hostPort(conn)
	domain := domainOf(cfg.Domain, cfg.Target)
	ids := idGen{prefix: runID()}
	total := (cfg.Last - cfg.First + 1) * len(cfg.Methods)
	pending := make(map[string]*scanTx, cfg.Window)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	send := func(tx *scanTx) {
		tx.sends++
		tx.deadline = time.Now().Add(cfg.Timeout)
		if _, err := conn.Write(tx.msg); err != nil {
			sendErr(&rep.Report, err)
			if !isRefused(err) {
				return
			}
			// The error was about an earlier datagram: try once more.
			if _, err = conn.Write(tx.msg); err != nil {
				sendErr(&rep.Report, err)
				return
			}
		}
		rep.Sent++
		rep.SendElapsed = time.Since(start)
	}

	next := 0
loop:
	for {
		for len(pending) < cfg.Window && next < total {
			if time.Now().After(end) {
				rep.Stop = StopDuration
				break loop
			}
			ext := strconv.Itoa(cfg.First + next/len(cfg.Methods))
			method := cfg.Methods[next%len(cfg.Methods)]
			next++
			callID := ids.nextString()
			tx := &scanTx{result: len(rep.Results), method: method,
				msg: scanRequest(method, ext, domain, local, callID, ids.nextString(), ids.nextString(), cfg.UserAgent)}
			rep.Results = append(rep.Results, ScanResult{Extension: ext, Method: method})
			pending[callID] = tx
			send(tx)
		}
		if len(pending) == 0 {
			rep.Stop = StopCount
			break
		}
		wake := end
		for _, tx := range pending {
			if tx.deadline.Before(wake) {
				wake = tx.deadline
			}
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			rep.Stop = stopOf(ctx)
			break loop
		case r := <-col.msgs:
			if r.StatusCode < 200 {
				continue
			}
			cid, cseq := r.CallID(), r.CSeq()
			if cid == nil || cseq == nil {
				continue
			}
			if tx, ok := pending[cid.Value()]; ok && string(cseq.MethodName) == tx.method {
				rep.Results[tx.result].Status = r.StatusCode
				delete(pending, cid.Value())
			}
		case <-timer.C:
			now := time.Now()
			if !now.Before(end) {
				rep.Stop = StopDuration
				break loop
			}
			for id, tx := range pending {
				if now.Before(tx.deadline) {
					continue
				}
				if tx.sends <= cfg.Retransmits {
					send(tx)
					continue
				}
				rep.Timeouts++
				delete(pending, id)
			}
		}
	}
	col.finish(conn, &rep.Report)
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// scanRequest builds one svwar-like probe.
func scanRequest(method, ext, domain, local, callID, tag, branch, ua string) []byte {
	ruri := "sip:" + ext + "@" + domain
	if method == "REGISTER" {
		ruri = "sip:" + domain
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n", local, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "To: \"%s\" <sip:%s@%s>\r\n", ext, ext, domain)
	fmt.Fprintf(&b, "From: \"%s\" <sip:%s@%s>;tag=%s\r\n", ext, ext, domain, tag)
	fmt.Fprintf(&b, "User-Agent: %s\r\n", ua)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", ext, local)
	fmt.Fprintf(&b, "CSeq: 1 %s\r\n", method)
	if method == "REGISTER" {
		b.WriteString("Expires: 3600\r\n")
	} else {
		b.WriteString("Accept: application/sdp\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}
