package baresip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configures the agent Start runs.
type Options struct {
	// IP is the agent's SIP and RTP address, a loopback address. Zero:
	// 127.0.0.1.
	IP netip.Addr
	// User is the account's user part (incoming calls are matched on the
	// request-URI's user). Empty: "baresip".
	User string
	// MediaEnc is the account's media encryption: "" (plain RTP),
	// "srtp" (SDES-SRTP when the peer takes it), "srtp-mand" (SDES-SRTP
	// only), "srtp-mandf", "dtls_srtp".
	MediaEnc string
	// ToneHz is the frequency of the sine the agent sends. Zero: 440.
	ToneHz int
	// Quit is when baresip ends its calls and exits (-t, whole seconds,
	// rounded up). Zero: 30 s.
	Quit time.Duration
	// Dial is a SIP URI to call as soon as the agent is up. Empty: the
	// agent waits for calls and answers them.
	Dial string
	// RTPPorts is the range baresip picks its RTP ports in, at random
	// (retrying a port in use). Zero: 40000–49999.
	RTPPorts [2]int

	// Registrar, when set, makes the account register: its address of
	// record is sip:User@Domain and every request it sends (REGISTER,
	// and calls) goes to Registrar over Transport (baresip's outbound
	// proxy), e.g. an SBC in front of the real registrar. Zero: the
	// account does not register (regint=0) and its AoR is sip:User@IP.
	Registrar netip.AddrPort
	// Domain is the AoR's domain (the REGISTER's request-URI). Empty:
	// Registrar's address.
	Domain string
	// Transport is "udp" (default), "tcp" or "tls": how the account
	// reaches Registrar. Over tcp and tls baresip 1.0.0 (libre) connects
	// from an address of the kernel's choice (127.0.0.1 on loopback), not
	// from IP: it does not bind its outgoing connections.
	Transport string
	// Password answers the registrar's digest challenges (user: User).
	Password string
	// Expires is the expiry the account asks for (regint). Zero: 3600.
	// baresip refreshes at 90 % of the expiry the registrar's 200 grants
	// for its Contact (libre sipreg).
	Expires int
	// AnswerMode is the account's answermode: "auto" (default: an
	// incoming call is answered at once), "manual" (it rings, 180, until
	// the caller gives up) or "early".
	AnswerMode string
	// Console loads baresip's cons module on a free port of IP, for
	// Command: a test that must order a call's steps (answer only once
	// something else has happened) drives the agent through it.
	Console bool
	// NoRTCPMux sets rtcp_mux no: RTCP on the RTP port + 1, without
	// a=rtcp-mux (with dtls_srtp, a DTLS association per component).
	NoRTCPMux bool
	// CAFile is the configuration's sip_cafile. baresip 1.0.0 does not
	// refuse a server whose certificate it does not verify (a wrong CA
	// file still registers over TLS).
	CAFile string
}

// UA is a running baresip started by Start.
type UA struct {
	t    testing.TB
	dir  string
	sip  netip.AddrPort
	out  *logBuffer // stdout: logs, the SIP trace, the statistics
	err  *logBuffer // stderr: the status line, redrawn with \r
	cmd  *exec.Cmd
	done chan struct{}  // closed when the process has exited
	werr error          // Wait's result, set before done is closed
	cons netip.AddrPort // the cons module's address (Options.Console)

	stopOnce sync.Once
}

const (
	startTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
)

// modules are the baresip modules the configuration loads.
var modules = []string{"g711.so", "ausine.so", "sndfile.so", "srtp.so", "dtls_srtp.so",
	"uuid.so", "account.so", "menu.so", "debug_cmd.so", "cons.so"}

const install = "install Debian packages baresip-core and sox"

type installation struct {
	baresip, sox, modules string
}

var lookup = sync.OnceValues(findInstallation)

// Available reports whether baresip (with the modules used here) and sox
// are installed: nil, or an error saying what is missing.
func Available() error {
	_, err := lookup()
	return err
}

func findInstallation() (installation, error) {
	var inst installation
	var err error
	if inst.baresip, err = exec.LookPath("baresip"); err != nil {
		return inst, fmt.Errorf("baresip not found on PATH (%s)", install)
	}
	if inst.sox, err = exec.LookPath("sox"); err != nil {
		return inst, fmt.Errorf("sox not found on PATH (%s)", install)
	}
	for _, d := range []string{"/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules"} {
		if _, err := os.Stat(filepath.Join(d, "ausine.so")); err != nil {
			continue
		}
		for _, m := range modules {
			if _, err := os.Stat(filepath.Join(d, m)); err != nil {
				return inst, fmt.Errorf("baresip module %s not found in %s", m, d)
			}
		}
		inst.modules = d
		return inst, nil
	}
	return inst, fmt.Errorf("baresip modules (ausine.so) not found (%s)", install)
}

// require skips the test when baresip or sox is missing, or fails it in CI.
func require(t testing.TB) installation {
	t.Helper()
	inst, err := lookup()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("baresip: %v", err)
		}
		t.Skipf("baresip: %v", err)
	}
	return inst
}

// Start runs baresip with o and returns once its SIP transports are bound
// (SIPAddr). It skips the test when baresip or sox is not installed,
// unless CI=true, where it fails it. The agent is stopped at cleanup, and
// its output logged if the test failed.
func Start(t testing.TB, o Options) *UA {
	t.Helper()
	inst := require(t)
	if !o.IP.IsValid() {
		o.IP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if !o.IP.IsLoopback() {
		t.Fatalf("baresip: %v is not a loopback address", o.IP)
	}
	if o.User == "" {
		o.User = "baresip"
	}
	if o.ToneHz == 0 {
		o.ToneHz = 440
	}
	if o.Quit == 0 {
		o.Quit = 30 * time.Second
	}
	if o.RTPPorts == [2]int{} {
		o.RTPPorts = [2]int{40000, 49999}
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "dump"), 0o700); err != nil {
		t.Fatalf("baresip: %v", err)
	}
	var cons netip.AddrPort
	if o.Console {
		var err error
		if cons, err = freePort(o.IP); err != nil {
			t.Fatalf("baresip: a port for the console: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config(inst, dir, o, cons)), 0o600); err != nil {
		t.Fatalf("baresip: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(account(o)+"\n"), 0o600); err != nil {
		t.Fatalf("baresip: %v", err)
	}
	quit := int((o.Quit + time.Second - 1) / time.Second)
	args := []string{"-f", dir, "-s", "-t", strconv.Itoa(quit), "-e", "/sipstat"}
	if o.Dial != "" {
		args = append(args, "-e", "/dial "+o.Dial)
	}
	u := &UA{t: t, dir: dir, out: &logBuffer{}, err: &logBuffer{}, done: make(chan struct{}), cons: cons}
	u.cmd = exec.Command(inst.baresip, args...)
	u.cmd.Dir = dir
	u.cmd.Stdout = u.out
	u.cmd.Stderr = u.err
	u.cmd.WaitDelay = stopTimeout
	// Registered before the stop, so that it runs after it: the whole log.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("baresip %s (%s) output:\n%s\n%s", o.User, dir, u.Output(), statusFree(u.err.String()))
		}
	})
	if err := u.cmd.Start(); err != nil {
		t.Fatalf("baresip: start: %v", err)
	}
	go func() {
		u.werr = u.cmd.Wait()
		close(u.done)
	}()
	t.Cleanup(u.Stop)
	if err := u.waitReady(o.IP); err != nil {
		t.Fatalf("baresip: %v\n%s", err, u.Output())
	}
	return u
}

func config(inst installation, dir string, o Options, cons netip.AddrPort) string {
	return fmt.Sprintf(`poll_method	epoll
sip_listen	%s
net_interface	%s
call_local_timeout	30
audio_source	ausine,%d
ausrc_srate	48000
ausrc_channels	2
rtp_ports	%d-%d
rtcp_mux	%s
rtp_stats	yes
rtp_timeout	10
module_path	%s
module	g711.so
module	ausine.so
module	sndfile.so
module	srtp.so
module	dtls_srtp.so
module_tmp	uuid.so
module_tmp	account.so
module_app	menu.so
module_app	debug_cmd.so
snd_path	%s
`, netip.AddrPortFrom(o.IP, 0), o.IP, o.ToneHz, o.RTPPorts[0], o.RTPPorts[1], map[bool]string{false: "yes", true: "no"}[o.NoRTCPMux], inst.modules, filepath.Join(dir, "dump")) + cafile(o) + console(cons)
}

// console is the configuration of the cons module at addr (none when
// addr is zero).
func console(addr netip.AddrPort) string {
	if !addr.IsValid() {
		return ""
	}
	return "module\tcons.so\ncons_listen\t" + addr.String() + "\n"
}

// freePort finds a port of ip free for both UDP and TCP, as the cons
// module listens on both. The port is free when freePort returns; the
// tests that use it own their loopback address.
func freePort(ip netip.Addr) (netip.AddrPort, error) {
	for range 10 {
		tl, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return netip.AddrPort{}, err
		}
		addr := tl.Addr().(*net.TCPAddr).AddrPort()
		ul, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		_ = tl.Close()
		if err == nil {
			_ = ul.Close()
			return addr, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no port of %v free for both UDP and TCP", ip)
}

func cafile(o Options) string {
	if o.CAFile == "" {
		return ""
	}
	return "sip_cafile\t" + o.CAFile + "\n"
}

func account(o Options) string {
	mode := o.AnswerMode
	if mode == "" {
		mode = "auto"
	}
	var a string
	if o.Registrar.IsValid() {
		domain, tr := o.Domain, o.Transport
		if domain == "" {
			domain = o.Registrar.String()
		}
		if tr == "" {
			tr = "udp"
		}
		expires := o.Expires
		if expires == 0 {
			expires = 3600
		}
		a = fmt.Sprintf("<sip:%s@%s;transport=%s>;outbound=\"sip:%s;transport=%s\";regint=%d", o.User, domain, tr, o.Registrar, tr, expires)
		if o.Password != "" {
			a += ";auth_pass=" + o.Password
		}
	} else {
		a = fmt.Sprintf("<sip:%s@%s>;regint=0", o.User, o.IP)
	}
	a += ";answermode=" + mode + ";audio_codecs=pcmu"
	if o.MediaEnc != "" {
		a += ";mediaenc=" + o.MediaEnc
	}
	return a
}

var udpTransport = regexp.MustCompile(`(?m)^\s+(\S+) \(UDP\)\s*$`)

// waitReady waits for /sipstat's list of transports.
func (u *UA) waitReady(ip netip.Addr) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if m := udpTransport.FindStringSubmatch(u.Output()); m != nil {
			ap, err := netip.ParseAddrPort(m[1])
			if err != nil || ap.Addr() != ip {
				return fmt.Errorf("UDP transport %q, want one on %v", m[1], ip)
			}
			u.sip = ap
			return nil
		}
		select {
		case <-u.done:
			return fmt.Errorf("exited during startup (%v)", u.werr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no UDP transport listed by /sipstat after %v", startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Command runs a menu command ("accept", "hangup", ...) in the agent
// through its console (Options.Console), as typed after '/'. It returns
// once the command is sent: its effects show in the SIP trace.
func (u *UA) Command(cmd string) error {
	if !u.cons.IsValid() {
		return errors.New("baresip: started without Options.Console")
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u.cons))
	if err != nil {
		return fmt.Errorf("baresip console: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("/" + cmd + "\n")); err != nil {
		return fmt.Errorf("baresip console: %w", err)
	}
	return nil
}

// SIPAddr is the agent's UDP SIP address.
func (u *UA) SIPAddr() netip.AddrPort { return u.sip }

// Dir is the agent's configuration directory.
func (u *UA) Dir() string { return u.dir }

// Output is what baresip printed on stdout so far: its log, the SIP
// trace and the call statistics (the status line, on stderr, is left out).
func (u *UA) Output() string { return u.out.String() }

// WaitLog waits up to timeout for the output to contain substr and
// reports whether it did.
func (u *UA) WaitLog(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(u.Output(), substr) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Wait waits up to timeout for baresip to exit by itself (Options.Quit)
// and returns its exit error.
func (u *UA) Wait(timeout time.Duration) error {
	select {
	case <-u.done:
		return u.werr
	case <-time.After(timeout):
		return fmt.Errorf("baresip still running after %v", timeout)
	}
}

// Stop ends baresip: SIGTERM (it hangs up its calls and exits), SIGKILL
// after a while. It returns once the process has exited.
func (u *UA) Stop() {
	u.stopOnce.Do(func() {
		select {
		case <-u.done:
			return
		default:
		}
		_ = u.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-u.done:
		case <-time.After(stopTimeout):
			_ = u.cmd.Process.Kill()
			<-u.done
		}
	})
}

// Exited reports whether the process has exited.
func (u *UA) Exited() bool {
	select {
	case <-u.done:
		return true
	default:
		return false
	}
}

// RTPStats are baresip's counters of a call's audio stream (rtp_stats).
type RTPStats struct {
	TxPackets, RxPackets int
	TxErrors, RxErrors   int
}

var (
	statsHeader = regexp.MustCompile(`(?m)^audio\s+Transmit:\s+Receive:\s*$`)
	statsLine   = regexp.MustCompile(`(?m)^(packets|errors):\s+(\d+)\s+(\d+)\s*$`)
)

// RTPStats returns the statistics baresip printed at the end of its last
// call, or an error when it printed none (no call ended yet).
func (u *UA) RTPStats() (RTPStats, error) {
	out := u.Output()
	loc := statsHeader.FindAllStringIndex(out, -1)
	if loc == nil {
		return RTPStats{}, errors.New("baresip printed no RTP statistics (no call ended)")
	}
	block := out[loc[len(loc)-1][1]:]
	var s RTPStats
	found := 0
	for _, m := range statsLine.FindAllStringSubmatch(block, 2) {
		tx, _ := strconv.Atoi(m[2])
		rx, _ := strconv.Atoi(m[3])
		switch m[1] {
		case "packets":
			s.TxPackets, s.RxPackets = tx, rx
		case "errors":
			s.TxErrors, s.RxErrors = tx, rx
		}
		found++
	}
	if found != 2 {
		return s, fmt.Errorf("incomplete RTP statistics:\n%s", block)
	}
	return s, nil
}

// DecryptFailures is how many times baresip logged an SRTP or SRTCP
// packet it could not decrypt (authentication failure or other).
func (u *UA) DecryptFailures() (rtp, rtcp int) {
	out := u.Output()
	return strings.Count(out, "srtp: failed to decrypt RTP packet"), strings.Count(out, "srtp: failed to decrypt RTCP packet")
}

var rtpSource = regexp.MustCompile(`incoming rtp for 'audio' established, receiving from (\S+)`)

// RTPSource is the address the agent's first RTP came from, as baresip
// logged it.
func (u *UA) RTPSource() (netip.AddrPort, bool) {
	m := rtpSource.FindStringSubmatch(u.Output())
	if m == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(m[1])
	return ap, err == nil
}

// DecodedWAV is the path of the audio the agent decoded in its call (the
// sndfile dump), once baresip closed it: after the call ended.
func (u *UA) DecodedWAV() (string, error) {
	m, err := filepath.Glob(filepath.Join(u.dir, "dump", "*-dec.wav"))
	if err != nil {
		return "", err
	}
	if len(m) != 1 {
		return "", fmt.Errorf("%d decoded audio files in %s, want 1", len(m), filepath.Join(u.dir, "dump"))
	}
	return m[0], nil
}

// Message is one SIP message of the trace.
type Message struct {
	Transport string
	Src, Dst  netip.AddrPort
	Text      string // start line, headers and body
}

var traceHead = regexp.MustCompile(`^(\w+) (\S+) -> (\S+)\n`)

// SIPTrace returns every SIP message the agent sent or received so far.
func (u *UA) SIPTrace() []Message {
	const start, end = "\x1b[36;1m#\n", "\x1b[;m"
	var msgs []Message
	out := u.Output()
	for {
		i := strings.Index(out, start)
		if i < 0 {
			return msgs
		}
		out = out[i+len(start):]
		j := strings.Index(out, end)
		if j < 0 {
			return msgs // still being written
		}
		block := out[:j]
		out = out[j:]
		m := traceHead.FindStringSubmatch(block)
		if m == nil {
			continue
		}
		src, err1 := netip.ParseAddrPort(m[2])
		dst, err2 := netip.ParseAddrPort(m[3])
		if err1 != nil || err2 != nil {
			continue
		}
		msgs = append(msgs, Message{Transport: m[1], Src: src, Dst: dst, Text: block[len(m[0]):]})
	}
}

// Received returns the SIP messages the agent received (SIPTrace, less
// what it sent).
func (u *UA) Received() []Message {
	var in []Message
	for _, m := range u.SIPTrace() {
		if m.Src != u.sip {
			in = append(in, m)
		}
	}
	return in
}

// Sent returns the SIP messages the agent sent.
func (u *UA) Sent() []Message {
	var out []Message
	for _, m := range u.SIPTrace() {
		if m.Src == u.sip {
			out = append(out, m)
		}
	}
	return out
}

// Body is the message's body (after the blank line), "" without one.
func (m Message) Body() string {
	_, b, _ := strings.Cut(m.Text, "\r\n\r\n")
	return b
}

// StartLine is the message's first line.
func (m Message) StartLine() string {
	l, _, _ := strings.Cut(m.Text, "\r\n")
	return l
}

// Tone is what sox measured in a WAV file.
type Tone struct {
	Seconds   float64 // length
	RMS       float64 // RMS amplitude, full scale 1
	Frequency float64 // sox's rough frequency (zero crossings), Hz
}

var soxStat = regexp.MustCompile(`(?m)^(Length \(seconds\)|RMS\s+amplitude|Rough\s+frequency):\s+(\S+)\s*$`)

// Measure runs `sox FILE -n stat` on a WAV file.
func Measure(t testing.TB, wav string) Tone {
	t.Helper()
	inst := require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, inst.sox, wav, "-n", "stat").CombinedOutput()
	if err != nil {
		t.Fatalf("sox %s -n stat: %v\n%s", wav, err, out)
	}
	var tone Tone
	n := 0
	for _, m := range soxStat.FindAllStringSubmatch(string(out), -1) {
		// sox prints "-nan" for the RMS of an empty file.
		v, err := strconv.ParseFloat(strings.TrimLeft(m[2], "+-"), 64)
		if strings.HasPrefix(m[2], "-") {
			v = -v
		}
		if err != nil {
			t.Fatalf("sox stat: %q: %v", m[0], err)
		}
		switch {
		case strings.HasPrefix(m[1], "Length"):
			tone.Seconds = v
		case strings.HasPrefix(m[1], "RMS"):
			tone.RMS = v
		default:
			tone.Frequency = v
		}
		n++
	}
	if n != 3 {
		t.Fatalf("sox stat: unexpected output:\n%s", out)
	}
	return tone
}

// statusFree removes baresip's status line ("[0:00:01] audio=...",
// redrawn with carriage returns) from its stderr.
func statusFree(s string) string {
	var keep []string
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if p := strings.TrimSpace(part); p != "" && !(strings.HasPrefix(p, "[") && strings.Contains(p, "audio=")) {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, "\n")
}

// logBuffer is an io.Writer safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
