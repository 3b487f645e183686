package stunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is the name of the stunnel executable looked up in PATH.
const Binary = "stunnel"

const (
	// readyTimeout bounds the wait for stunnel to bind its accept port.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds the wait for stunnel to exit after SIGTERM, and
	// again after SIGKILL.
	stopTimeout = 5 * time.Second
	// bindAttempts is how many free ports are tried: another process can
	// take a port between the moment it is found free and stunnel's bind.
	bindAttempts = 3
)

// ClientOptions configures a Client shim: it accepts plain TCP and
// connects with TLS to Connect.
type ClientOptions struct {
	// Connect is the TLS server's address. Required.
	Connect netip.AddrPort
	// CertFile and KeyFile are the client certificate and key (PEM) to
	// present; both empty means no client certificate.
	CertFile, KeyFile string
	// CAFile, when set, is the PEM file of the CA the server's
	// certificate chain must verify against (verifyChain = yes). Empty
	// means the server certificate is not verified.
	CAFile string
	// ServerName, when set, is what the server certificate must name, as
	// in tls.Config.ServerName: a DNS name is sent as SNI and checked
	// (sni, checkHost); an IP address literal is checked against the IP
	// SANs (checkIP) and no SNI is sent. Checked only with CAFile.
	ServerName string
	// Extra holds additional service-level configuration lines, each
	// "option = value" (for example "sslVersionMax = TLSv1.2" or
	// "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256"), written after the
	// package's own, so they can override them.
	Extra []string
}

// ServerOptions configures a Server shim: it accepts TLS and connects
// with plain TCP to Connect.
type ServerOptions struct {
	// Connect is the plain TCP server's address. Required.
	Connect netip.AddrPort
	// CertFile and KeyFile are the server certificate and key (PEM).
	// Required.
	CertFile, KeyFile string
	// CAFile, when set, is the PEM file of the CA a client certificate
	// must verify against (verifyChain = yes). A client without a
	// certificate is still accepted unless RequireClientCert is set.
	CAFile string
	// RequireClientCert refuses clients that present no certificate
	// (requireCert = yes). Requires CAFile.
	RequireClientCert bool
	// Extra is as in ClientOptions.
	Extra []string
}

// Available reports whether the stunnel binary is in PATH.
func Available() error {
	_, err := exec.LookPath(Binary)
	if err != nil {
		return fmt.Errorf("stunnel not found (install Debian package stunnel4): %w", err)
	}
	return nil
}

// require returns the stunnel path, skipping the test when it is missing,
// except in CI (CI=true), where that fails the test.
func require(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("stunnel not found (install Debian package stunnel4): %v", err)
		}
		t.Skip("stunnel not installed (Debian package stunnel4)")
	}
	return p
}

// Client starts a Client shim and returns its plain TCP accept address on
// 127.0.0.1. Each connection accepted there is carried with TLS to
// opts.Connect. The shim lives until the test's cleanup.
func Client(t testing.TB, opts ClientOptions) netip.AddrPort {
	t.Helper()
	bin := require(t)
	service, err := clientService(opts)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, bin, "client", service)
}

// clientService returns the service section lines of a Client shim.
func clientService(opts ClientOptions) ([]string, error) {
	if !opts.Connect.IsValid() {
		return nil, errors.New("stunnel.Client: Connect is not set")
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("stunnel.Client: CertFile and KeyFile go together")
	}
	lines := []string{"client = yes", "connect = " + hostPort(opts.Connect)}
	if opts.CertFile != "" {
		lines = append(lines, "cert = "+opts.CertFile, "key = "+opts.KeyFile)
	}
	if opts.CAFile != "" {
		lines = append(lines, "CAfile = "+opts.CAFile, "verifyChain = yes")
	}
	if opts.ServerName != "" {
		if ip, err := netip.ParseAddr(opts.ServerName); err == nil {
			lines = append(lines, "sni =", "checkIP = "+ip.String())
		} else {
			lines = append(lines, "sni = "+opts.ServerName, "checkHost = "+opts.ServerName)
		}
	}
	return append(lines, opts.Extra...), nil
}

// Server starts a Server shim and returns its TLS accept address on
// 127.0.0.1. Each connection accepted there is carried with plain TCP to
// opts.Connect. The shim lives until the test's cleanup.
func Server(t testing.TB, opts ServerOptions) netip.AddrPort {
	t.Helper()
	bin := require(t)
	service, err := serverService(opts)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, bin, "server", service)
}

// serverService returns the service section lines of a Server shim.
func serverService(opts ServerOptions) ([]string, error) {
	if !opts.Connect.IsValid() {
		return nil, errors.New("stunnel.Server: Connect is not set")
	}
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("stunnel.Server: CertFile and KeyFile are required")
	}
	if opts.RequireClientCert && opts.CAFile == "" {
		return nil, errors.New("stunnel.Server: RequireClientCert needs CAFile")
	}
	lines := []string{
		"connect = " + hostPort(opts.Connect),
		"cert = " + opts.CertFile,
		"key = " + opts.KeyFile,
	}
	if opts.CAFile != "" {
		// verifyChain = yes implies requireCert = yes: say no explicitly
		// to accept clients without a certificate.
		lines = append(lines, "CAfile = "+opts.CAFile, "verifyChain = yes",
			"requireCert = "+yesNo(opts.RequireClientCert))
	}
	return append(lines, opts.Extra...), nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// hostPort formats an address the way stunnel's connect option reads it:
// HOST:PORT with an IPv6 address unbracketed (stunnel splits at the last
// colon).
func hostPort(ap netip.AddrPort) string {
	return ap.Addr().Unmap().String() + ":" + strconv.Itoa(int(ap.Port()))
}

// config is the whole stunnel configuration for one service.
func config(name string, accept netip.AddrPort, service []string) string {
	var b strings.Builder
	b.WriteString("; written by internal/stunnel for a test\n")
	b.WriteString("foreground = yes\n") // log to stderr, no fork
	b.WriteString("pid =\n")            // no pid file
	b.WriteString("syslog = no\n")
	b.WriteString("debug = debug\n") // everything; shown only when a test fails
	fmt.Fprintf(&b, "\n[%s]\n", name)
	fmt.Fprintf(&b, "accept = %s\n", hostPort(accept))
	b.WriteString("sslVersionMin = TLSv1.2\n")
	for _, l := range service {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// start runs stunnel with one service named name and returns its accept
// address once stunnel has bound it, retrying with another port when the
// chosen one was taken in the meantime.
func start(t testing.TB, bin, name string, service []string) netip.AddrPort {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		accept := freePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("stunnel-%d.conf", attempt))
		text := config(name, accept, service)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := launch(bin, conf, accept)
		if err == nil {
			t.Cleanup(func() {
				select {
				case <-p.done:
					t.Errorf("stunnel %s shim on %s exited during the test: %v", name, accept, p.waitErr)
				default:
					p.stop()
				}
				if t.Failed() {
					t.Logf("stunnel %s shim on %s, configuration %s:\n%s\n--- output ---\n%s", name, accept, conf, text, p.out.Excerpt())
				}
			})
			return accept
		}
		if p.inUse() && attempt < bindAttempts {
			continue
		}
		t.Fatalf("stunnel %s shim on %s: %v\nconfiguration %s:\n%s\n--- output ---\n%s", name, accept, err, conf, text, p.out.Excerpt())
	}
}

// proc is a running stunnel.
type proc struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{} // closed when Wait returned
	waitErr error         // set before done is closed
}

// launch starts stunnel and waits, at most readyTimeout, for it to log that
// it bound accept. On error the process has exited or been killed.
func launch(bin, conf string, accept netip.AddrPort) (*proc, error) {
	p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, conf)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.WaitDelay = stopTimeout // bound Wait's copying of the output
	if err := p.cmd.Start(); err != nil {
		return p, err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	bound := []byte("bound to " + hostPort(accept))
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.out.Contains(bound) {
			return p, nil
		}
		select {
		case <-p.done:
			if p.out.Contains(bound) {
				return p, fmt.Errorf("stunnel exited after binding: %v", p.waitErr)
			}
			return p, fmt.Errorf("stunnel exited before binding %s: %v", accept, p.waitErr)
		case <-deadline.C:
			p.stop()
			return p, fmt.Errorf("stunnel did not bind %s within %s", accept, readyTimeout)
		case <-tick.C:
		}
	}
}

// inUse reports whether stunnel failed because the accept port was taken.
func (p *proc) inUse() bool {
	return p.out.Contains([]byte("Address already in use"))
}

// stop ends stunnel: SIGTERM, then SIGKILL if it has not exited within
// stopTimeout. It returns when the process has exited, or after a second
// stopTimeout.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
	}
}

// freePort returns a 127.0.0.1 TCP port that was free a moment ago.
func freePort(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// syncBuffer is a bytes.Buffer safe for stunnel's output copier and the
// test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Excerpt returns the output, or, when it is longer than 64 KiB, its first
// 16 KiB (start-up and configuration) and last 48 KiB (what just failed).
func (s *syncBuffer) Excerpt() string {
	const head, tail = 16 << 10, 48 << 10
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) <= head+tail {
		return string(b)
	}
	return fmt.Sprintf("%s\n[... %d bytes left out ...]\n%s", b[:head], len(b)-head-tail, b[len(b)-tail:])
}

func (s *syncBuffer) Contains(sub []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Contains(s.b.Bytes(), sub)
}
