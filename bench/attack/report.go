package attack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"
)

// StopReason says why a run ended.
type StopReason string

// Reasons a run ends.
const (
	// StopCount: the count bound was reached or the work list is done
	// (every extension scanned, every password tried, Count datagrams sent).
	StopCount StopReason = "count"
	// StopDuration: the time bound (Duration) was reached first.
	StopDuration StopReason = "duration"
	// StopCanceled: the context was cancelled.
	StopCanceled StopReason = "canceled"
	// StopFound: DigestBruteForce got a 2xx (the password is found).
	StopFound StopReason = "found"
	// StopNoChallenge: DigestBruteForce got a final response without a
	// digest challenge before it had one, so it cannot go on.
	StopNoChallenge StopReason = "no-challenge"
	// StopUnanswered: DigestBruteForce got no answer to MaxTimeouts
	// requests in a row (the target dropped or blocked it).
	StopUnanswered StopReason = "unanswered"
)

// Report is the outcome of one generator run.
type Report struct {
	// Sent counts datagrams written (requests including retransmissions,
	// or raw packets), successful writes only.
	Sent int
	// Received counts datagrams read on the generator's socket.
	Received int
	// Responses counts received SIP responses by status code (every
	// datagram: provisional ones and retransmissions included).
	Responses map[int]int
	// Unparsed counts received datagrams that were not SIP responses.
	Unparsed int
	// Errors counts failed reads and writes (ICMP errors such as
	// "connection refused" included); FirstError is the first of them.
	Errors     int
	FirstError error
	// Timeouts counts transactions that got no final response in time
	// (ExtensionScan, DigestBruteForce).
	Timeouts int
	// Stop says why the run ended.
	Stop StopReason
	// SendElapsed is the time from the start of the run to the last send;
	// Sent/SendElapsed is the achieved send rate.
	SendElapsed time.Duration
	// Elapsed is the wall time of the whole run, waiting for answers
	// included.
	Elapsed time.Duration
}

// Rate returns the achieved send rate in datagrams per second (Sent over
// SendElapsed), 0 when nothing was sent.
func (r Report) Rate() float64 {
	if r.Sent == 0 || r.SendElapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.SendElapsed.Seconds()
}

// String summarises the report on one line.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent=%d received=%d", r.Sent, r.Received)
	codes := make([]int, 0, len(r.Responses))
	for c := range r.Responses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		fmt.Fprintf(&b, " %d=%d", c, r.Responses[c])
	}
	fmt.Fprintf(&b, " unparsed=%d errors=%d timeouts=%d stop=%s elapsed=%s rate=%.0f/s",
		r.Unparsed, r.Errors, r.Timeouts, r.Stop, r.Elapsed.Round(time.Millisecond), r.Rate())
	if r.FirstError != nil {
		fmt.Fprintf(&b, " first_error=%q", r.FirstError.Error())
	}
	return b.String()
}

// Defaults shared by the generators.
const (
	defaultDuration  = 10 * time.Second
	defaultCount     = 1000
	defaultUserAgent = "friendly-scanner"
	socketBuffer     = 4 << 20
	maxDatagram      = 65507
)

// checkTarget refuses destinations that are not one unicast host.
func checkTarget(t netip.AddrPort) error {
	a := t.Addr().Unmap()
	switch {
	case !t.IsValid():
		return errors.New("attack: target address not set")
	case t.Port() == 0:
		return errors.New("attack: target port is 0")
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("attack: target %s is not a unicast address", a)
	}
	return nil
}

// dialUDP opens a UDP socket bound to local (any address of the target's
// family when local has no address) and connected to target, so that it
// sends only there and reads only what target sends back.
func dialUDP(local, target netip.AddrPort) (*net.UDPConn, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	dst := netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	la := local.Addr().Unmap()
	if !la.IsValid() {
		la = netip.IPv4Unspecified()
		if dst.Addr().Is6() {
			la = netip.IPv6Unspecified()
		}
	}
	if la.Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("attack: local %s and target %s are of different families", la, dst.Addr())
	}
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(la, local.Port())), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	return c, nil
}

// hostPort formats the socket's local address for Via and Contact.
func hostPort(c *net.UDPConn) string {
	return c.LocalAddr().(*net.UDPAddr).AddrPort().String()
}

// domainOf is the default host part of URIs: the target address.
func domainOf(domain string, t netip.AddrPort) string {
	if domain != "" {
		return domain
	}
	a := t.Addr().Unmap()
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// collector reads a generator's socket and counts what comes back.
type collector struct {
	mu        sync.Mutex
	received  int
	unparsed  int
	errors    int
	firstErr  error
	responses map[int]int

	finals atomic.Int64  // final (>= 200) responses seen
	notify chan struct{} // poked (non-blocking) after each final response
	msgs   chan *sip.Response
	done   chan struct{}
}

// startCollector starts reading conn until it is closed. When parse is
// true every SIP response is also parsed and offered (non-blocking) on
// msgs.
func startCollector(conn *net.UDPConn, parse bool) *collector {
	c := &collector{
		responses: map[int]int{},
		notify:    make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if parse {
		c.msgs = make(chan *sip.Response, 256)
	}
	go c.run(conn)
	return c
}

func (c *collector) run(conn *net.UDPConn) {
	defer close(c.done)
	buf := make([]byte, 65536)
	failures := 0
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.fail(err)
			// ICMP errors come one per packet; a socket that fails for
			// good would spin, so give up after a long run of failures.
			if failures++; failures > 10000 {
				return
			}
			continue
		}
		failures = 0
		code, ok := statusCode(buf[:n])
		c.mu.Lock()
		c.received++
		if ok {
			c.responses[code]++
		} else {
			c.unparsed++
		}
		c.mu.Unlock()
		if !ok {
			continue
		}
		if c.msgs != nil {
			if r := parseResponse(buf[:n]); r != nil {
				select {
				case c.msgs <- r:
				default:
				}
			}
		}
		if code >= 200 {
			c.finals.Add(1)
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
	}
}

// parseResponse parses b with sipgo, nil when b is not a SIP response
// (or the parser panics: a hostile target must not crash the generator).
func parseResponse(b []byte) (r *sip.Response) {
	defer func() {
		if recover() != nil {
			r = nil
		}
	}()
	m, err := sip.ParseMessage(b)
	if err != nil {
		return nil
	}
	r, _ = m.(*sip.Response)
	return r
}

// fail counts one error.
func (c *collector) fail(err error) {
	c.mu.Lock()
	c.errors++
	if c.firstErr == nil {
		c.firstErr = err
	}
	c.mu.Unlock()
}

// linger waits up to d for the number of final responses to reach want,
// or for ctx to end.
func (c *collector) linger(ctx context.Context, d time.Duration, want int) {
	if d <= 0 || int(c.finals.Load()) >= want {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for int(c.finals.Load()) < want {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-c.notify:
		}
	}
}

// finish closes conn, waits for the reader and copies the counts into r.
func (c *collector) finish(conn *net.UDPConn, r *Report) {
	_ = conn.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	r.Received = c.received
	r.Unparsed = c.unparsed
	r.Responses = c.responses
	r.Errors += c.errors
	if r.FirstError == nil {
		r.FirstError = c.firstErr
	}
}

// sendErr counts a failed write in r. ECONNREFUSED on a connected UDP
// socket reports an ICMP error for an earlier datagram.
func sendErr(r *Report, err error) {
	r.Errors++
	if r.FirstError == nil {
		r.FirstError = err
	}
}

// isRefused reports whether err is an ICMP-induced error of a connected
// UDP socket, which says nothing about the current write.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// statusCode returns the status code of a SIP response's status line
// ("SIP/2.0 NNN ..."), and false when b does not start with one.
func statusCode(b []byte) (int, bool) {
	const prefix = "SIP/2.0 "
	if len(b) < len(prefix)+3 || string(b[:len(prefix)]) != prefix {
		return 0, false
	}
	code := 0
	for _, ch := range b[len(prefix) : len(prefix)+3] {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		code = code*10 + int(ch-'0')
	}
	if code < 100 {
		return 0, false
	}
	if rest := b[len(prefix)+3:]; len(rest) > 0 && rest[0] != ' ' && rest[0] != '\r' && rest[0] != '\n' {
		return 0, false
	}
	return code, true
}

// deadlineOf returns the run's end: the sooner of ctx's deadline and
// start+d.
func deadlineOf(ctx context.Context, start time.Time, d time.Duration) time.Time {
	end := start.Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	return end
}

// stopOf maps the early end of a run by its context to a StopReason: a
// cancelled context is StopCanceled, an expired one counts as the time
// bound.
func stopOf(ctx context.Context) StopReason {
	if errors.Is(ctx.Err(), context.Canceled) {
		return StopCanceled
	}
	return StopDuration
}
