package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RTPEngine is an rtpengine daemon (Debian's rtpengine-daemon) run by the
// harness in userspace mode on loopback, and its ng control channel.
type RTPEngine struct {
	cmd    *exec.Cmd
	ng     *net.UDPConn
	stderr *lockedBuffer
	done   chan struct{}
	mu     sync.Mutex
	cookie int
}

// RTPEngineConfig says how to start it.
type RTPEngineConfig struct {
	// Bin is the daemon (default: rtpengine from PATH).
	Bin string
	// PortMin and PortMax bound its media ports (default: a random range
	// of 2,000 ports between 20000 and 60000).
	PortMin, PortMax int
	// Threads is --num-threads (default: rtpengine's own, one per CPU).
	Threads int
}

// LookRTPEngine returns the daemon's path, or an error if it is not
// installed.
func LookRTPEngine() (string, error) { return exec.LookPath("rtpengine") }

// StartRTPEngine starts the daemon in the foreground with everything on
// the command line (no config file, no kernel module: --table=-1) and
// waits until it answers an ng ping.
func StartRTPEngine(ctx context.Context, cfg RTPEngineConfig) (*RTPEngine, error) {
	if cfg.Bin == "" {
		bin, err := LookRTPEngine()
		if err != nil {
			return nil, err
		}
		cfg.Bin = bin
	}
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = randomRange(1000)
	}
	// The daemon's own ng port: a free one, found by binding and
	// releasing it (a race with other processes is possible, and then
	// the ping below fails clearly).
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	ngPort := probe.LocalAddr().(*net.UDPAddr).Port
	_ = probe.Close()
	ng, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ngPort})
	if err != nil {
		return nil, err
	}
	args := []string{
		"--config-file=none", "--foreground", "--log-stderr", "--log-level=4", "--table=-1",
		"--interface=127.0.0.1",
		"--listen-ng=127.0.0.1:" + strconv.Itoa(ngPort),
		"--port-min=" + strconv.Itoa(cfg.PortMin), "--port-max=" + strconv.Itoa(cfg.PortMax),
	}
	if cfg.Threads > 0 {
		args = append(args, "--num-threads="+strconv.Itoa(cfg.Threads))
	}
	cmd := exec.Command(cfg.Bin, args...)
	e := &RTPEngine{cmd: cmd, ng: ng, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
	if err := cmd.Start(); err != nil {
		_ = ng.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(e.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		r, err := e.Command(pctx, map[string]any{"command": "ping"})
		cancel()
		if err == nil && r["result"] == "pong" {
			return e, nil
		}
		select {
		case <-e.done:
			return nil, fmt.Errorf("rtpengine exited: %s", e.stderr.tail())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = e.Close()
			return nil, fmt.Errorf("rtpengine does not answer ng ping on port %d: %v; %s", ngPort, err, e.stderr.tail())
		}
	}
}

// Pid is the daemon's process id (for its CPU time).
func (e *RTPEngine) Pid() int { return e.cmd.Process.Pid }

// Log returns the last lines the daemon wrote.
func (e *RTPEngine) Log() string { return e.stderr.tail() }

// Command sends one ng command and returns the reply dictionary. A
// reply whose result is "error" is returned as an error with its reason.
// Lost datagrams are retried until ctx ends.
func (e *RTPEngine) Command(ctx context.Context, cmd map[string]any) (map[string]any, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cookie++
	cookie := strconv.Itoa(os.Getpid()) + "_" + strconv.Itoa(e.cookie)
	var msg bytes.Buffer
	msg.WriteString(cookie + " ")
	if err := encodeBencode(&msg, cmd); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	for {
		if _, err := e.ng.Write(msg.Bytes()); err != nil {
			return nil, err
		}
		wait := time.Now().Add(time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(wait) {
			wait = d
		}
		_ = e.ng.SetReadDeadline(wait)
		for {
			n, err := e.ng.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // resend
				}
				return nil, err
			}
			reply, ok := strings.CutPrefix(string(buf[:n]), cookie+" ")
			if !ok {
				continue // a late reply to an earlier command
			}
			v, _, err := decodeBencode([]byte(reply))
			if err != nil {
				return nil, err
			}
			d, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("ng: reply is %T", v)
			}
			if d["result"] == "error" {
				return d, fmt.Errorf("ng %v: %v", cmd["command"], d["error-reason"])
			}
			return d, nil
		}
	}
}

var mLine = regexp.MustCompile(`(?m)^m=audio (\d+) `)

// sdpPort returns the audio port and c= address of an SDP.
func sdpPort(sdp string) (int, error) {
	m := mLine.FindStringSubmatch(sdp)
	if m == nil {
		return 0, fmt.Errorf("no m=audio line in %q", sdp)
	}
	return strconv.Atoi(m[1])
}

func plainSDP(a netip.AddrPort) string {
	return "v=0\r\no=- 1 1 IN IP4 " + a.Addr().String() + "\r\ns=-\r\nc=IN IP4 " + a.Addr().String() +
		"\r\nt=0 0\r\nm=audio " + strconv.Itoa(int(a.Port())) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
}

// Call anchors one plain RTP call through the daemon: an offer from a
// (the caller's media address) and an answer from b. It returns the
// daemon's ports: toA is where a's peer (b) sends, and where the daemon
// sends a's media from; toB likewise for b. In the harness's terms: the
// A phone sends to the address on its leg, fromA, which is the port in
// the answer's SDP.
func (e *RTPEngine) Call(ctx context.Context, id string, a, b netip.AddrPort) (legA, legB netip.AddrPort, err error) {
	off, err := e.Command(ctx, map[string]any{"command": "offer", "call-id": id, "from-tag": id + "-a", "sdp": plainSDP(a)})
	if err != nil {
		return legA, legB, err
	}
	ans, err := e.Command(ctx, map[string]any{"command": "answer", "call-id": id, "from-tag": id + "-a", "to-tag": id + "-b", "sdp": plainSDP(b)})
	if err != nil {
		return legA, legB, err
	}
	offSDP, _ := off["sdp"].(string)
	ansSDP, _ := ans["sdp"].(string)
	pb, err := sdpPort(offSDP) // the offer as the callee receives it: the daemon's port for b
	if err != nil {
		return legA, legB, err
	}
	pa, err := sdpPort(ansSDP) // the answer as the caller receives it: the daemon's port for a
	if err != nil {
		return legA, legB, err
	}
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	return netip.AddrPortFrom(lo, uint16(pa)), netip.AddrPortFrom(lo, uint16(pb)), nil
}

// Delete ends a call.
func (e *RTPEngine) Delete(ctx context.Context, id string) error {
	_, err := e.Command(ctx, map[string]any{"command": "delete", "call-id": id, "from-tag": id + "-a"})
	return err
}

// Close stops the daemon (SIGTERM, then SIGKILL after 5 s) and waits.
func (e *RTPEngine) Close() error {
	_ = e.ng.Close()
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
	return nil
}

// lockedBuffer keeps the last 64 KB a child wrote.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 64<<10 {
		l.b = append(l.b[:0:0], l.b[len(l.b)-32<<10:]...)
	}
	return len(p), nil
}

func (l *lockedBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := string(l.b)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
