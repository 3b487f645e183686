package attack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"golang.org/x/sys/unix"
)

// ConnFloodConfig configures ConnFlood.
type ConnFloodConfig struct {
	// Target is where every connection goes (required).
	Target netip.AddrPort
	// Sources is the prefix the connections' source addresses are taken
	// from (SpreadAddr: an IPv6 /48 is spread over its /64s). Any 127/8
	// address can be bound without setup; other prefixes need a local
	// route (ip route add local PREFIX dev lo) in the namespace NetNS, the
	// sockets have IP_FREEBIND. Default: the target's loopback family,
	// a single source.
	Sources netip.Prefix
	// MaxSources bounds the distinct source addresses (cycled); default
	// Count.
	MaxSources int
	// Count is the number of connections to open (default 100); Rate
	// paces their opening (connections per second; 0: as fast as
	// possible).
	Count int
	Rate  float64
	// Payload is written on each connection once it is up: all at once,
	// or one byte every Drip when Drip > 0 (a slow sender).
	Payload []byte
	Drip    time.Duration
	// Hold is how long each connection is kept open after it is up
	// (default 1s); Duration bounds the whole run (default 10s).
	Hold     time.Duration
	Duration time.Duration
	// NetNS names the network namespace the sockets are opened in.
	NetNS string
}

// ConnReport is the outcome of a ConnFlood.
type ConnReport struct {
	// Report.Sent counts the bytes of Payload written, Report.Errors the
	// connections that could not be opened.
	Report
	// Opened counts connections established; of them, ClosedByPeer were
	// closed by the target before their Hold ended (it read EOF or a
	// reset), Held were still open at the end of it.
	Opened, ClosedByPeer, Held int
	// Sources is the number of distinct source addresses used.
	Sources int
}

// ConnFlood opens Count TCP connections to the target from source
// addresses of Sources, writes Payload on each (at once or drop by drop),
// and keeps each open for Hold or until the target closes it. It is
// bounded by Count and Duration, and ends early with its context.
func ConnFlood(ctx context.Context, cfg ConnFloodConfig) (ConnReport, error) {
	var rep ConnReport
	if err := checkTarget(cfg.Target); err != nil {
		return rep, err
	}
	if cfg.Count < 0 || cfg.Rate < 0 || cfg.MaxSources < 0 || cfg.Hold < 0 || cfg.Duration < 0 || cfg.Drip < 0 {
		return rep, errors.New("attack: ConnFlood: negative Count, Rate, MaxSources, Hold, Drip or Duration")
	}
	dst := netip.AddrPortFrom(cfg.Target.Addr().Unmap(), cfg.Target.Port())
	pfx := cfg.Sources.Masked()
	if !pfx.IsValid() {
		a := netip.MustParseAddr("127.0.0.1")
		if dst.Addr().Is6() {
			a = netip.IPv6Loopback()
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Is4() != dst.Addr().Is4() {
		return rep, fmt.Errorf("attack: ConnFlood: Sources %s and target %s are not of one family", pfx, dst)
	}
	if cfg.Count == 0 {
		cfg.Count = 100
	}
	if cfg.Hold == 0 {
		cfg.Hold = time.Second
	}
	if cfg.Duration == 0 {
		cfg.Duration = defaultDuration
	}
	n := uint64(cfg.Count)
	if cfg.MaxSources > 0 && uint64(cfg.MaxSources) < n {
		n = uint64(cfg.MaxSources)
	}
	if pfx.Bits() == pfx.Addr().BitLen() {
		n = 1
	}
	rep.Sources = int(n)
	start := time.Now()
	end := deadlineOf(ctx, start, cfg.Duration)
	runCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var (
		wg                   sync.WaitGroup
		opened, closed, held atomic.Int64
		written              atomic.Int64
		mu                   sync.Mutex
	)
	control := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			level, opt := unix.IPPROTO_IP, unix.IP_FREEBIND
			if dst.Addr().Is6() {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
			}
			serr = unix.SetsockoptInt(int(fd), level, opt, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}
	p := newPacer(runCtx, start, end, cfg.Rate)
	defer p.stop()
	rep.Stop = StopCount
	// The sockets are made on the namespace's thread, one after the other;
	// each connection then lives in a goroutine of its own.
	err := netns.Do(cfg.NetNS, func() error {
		for i := 0; i < cfg.Count; i++ {
			if stop := p.wait(i); stop != "" {
				rep.Stop = stop
				return nil
			}
			src := pfx.Addr()
			if n > 1 {
				src = SpreadAddr(pfx, uint64(i)%n)
			}
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Control: control,
				Timeout: 5 * time.Second}
			c, err := d.DialContext(runCtx, "tcp", dst.String())
			if err != nil {
				mu.Lock()
				sendErr(&rep.Report, err)
				mu.Unlock()
				continue
			}
			opened.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				switch r := hold(runCtx, c, cfg.Payload, cfg.Drip, cfg.Hold, &written); r {
				case holdClosed:
					closed.Add(1)
				case holdHeld:
					held.Add(1)
				}
			}()
		}
		return nil
	})
	rep.SendElapsed = time.Since(start)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if err != nil {
		return rep, err
	}
	rep.Opened, rep.ClosedByPeer, rep.Held = int(opened.Load()), int(closed.Load()), int(held.Load())
	rep.Sent = int(written.Load())
	rep.Responses = map[int]int{}
	return rep, nil
}

// Outcomes of hold.
const (
	holdHeld   = iota // open until the hold ended
	holdClosed        // the target closed it
	holdOther         // the run ended first
)

// hold writes payload on c (drop by drop when drip > 0) and keeps c open
// for d or until the peer closes it; what c receives is read and ignored.
func hold(ctx context.Context, c net.Conn, payload []byte, drip, d time.Duration, written *atomic.Int64) int {
	peerClosed := make(chan struct{})
	go func() {
		defer close(peerClosed)
		_, _ = io.Copy(io.Discard, c)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	if drip <= 0 && len(payload) > 0 {
		if n, err := c.Write(payload); err == nil {
			written.Add(int64(n))
		}
	}
	var tick <-chan time.Time
	if drip > 0 && len(payload) > 0 {
		tk := time.NewTicker(drip)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-peerClosed:
			return holdClosed
		case <-t.C:
			return holdHeld
		case <-ctx.Done():
			return holdOther
		case <-tick:
			if len(payload) == 0 {
				tick = nil
				continue
			}
			if _, err := c.Write(payload[:1]); err != nil {
				<-peerClosed
				return holdClosed
			}
			written.Add(1)
			payload = payload[1:]
		}
	}
}
