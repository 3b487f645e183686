package kamailio

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configures the server Start runs.
type Options struct {
	// UDP is the plain UDP listener. Zero: 127.0.0.1 on a free port; port
	// 0: that address on a free port. It must be a loopback address.
	UDP netip.AddrPort
	// TLS is the TLS listener, with the same defaults and rule as UDP.
	TLS netip.AddrPort

	// CertFile and KeyFile are the server's certificate (chain) and private
	// key, PEM encoded. Both are required.
	CertFile, KeyFile string
	// CAFile, PEM encoded, verifies client certificates. Empty: no client
	// certificate is asked for.
	CAFile string
	// RequireClientCert refuses TLS clients without a certificate that
	// CAFile verifies (verify_certificate and require_certificate). It
	// needs CAFile.
	RequireClientCert bool

	// Auth maps user names to passwords. When set, REGISTER is digest
	// authenticated (401 challenges in Realm); a user with an empty
	// password cannot register.
	Auth map[string]string
	// Realm is the digest realm, also an alias of the server's domain.
	// Empty: DefaultRealm.
	Realm string
	// MaxExpires is the registrar's max_expires: a longer expiry asked
	// for is granted as this. 0: 86400.
	MaxExpires int
}

// Kamailio is a running server started by Start.
type Kamailio struct {
	udp, tls netip.AddrPort
	cfg      string // path of kamailio.cfg
	ctl      string // the ctl module's unix socket (kamcmd -s unix:ctl)

	log  *logBuffer
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
	checkTimeout = 20 * time.Second
)

// install names what to install when Available fails.
const install = "install Debian packages kamailio and kamailio-tls-modules"

type installation struct {
	bin        string
	modulesDir string
}

var lookup = sync.OnceValues(findInstallation)

// Available reports whether Kamailio and its tls module are installed: nil,
// or an error saying what is missing.
func Available() error {
	_, err := lookup()
	return err
}

func findInstallation() (installation, error) {
	bin, err := exec.LookPath("kamailio")
	if err != nil {
		bin = "/usr/sbin/kamailio"
		if _, serr := os.Stat(bin); serr != nil {
			return installation{}, fmt.Errorf("kamailio binary not found on PATH or at %s (%s)", bin, install)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-I").CombinedOutput()
	if err != nil {
		return installation{}, fmt.Errorf("%s -I: %v: %s", bin, err, bytes.TrimSpace(out))
	}
	var dirs []string
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Default paths to modules:"); ok {
			dirs = strings.Split(strings.TrimSpace(v), ":")
		}
	}
	if len(dirs) == 0 {
		return installation{}, fmt.Errorf("%s -I does not name its module path", bin)
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "tls.so")); err != nil {
			continue
		}
		for _, m := range append([]string{"auth.so"}, modules...) {
			if _, err := os.Stat(filepath.Join(d, m)); err != nil {
				return installation{}, fmt.Errorf("kamailio module %s not found in %s", m, d)
			}
		}
		return installation{bin: bin, modulesDir: d}, nil
	}
	return installation{}, fmt.Errorf("kamailio module tls.so not found in %s (%s)", strings.Join(dirs, ":"), install)
}

// Start runs Kamailio with o for the rest of the test and returns once its
// TLS port accepts connections. It skips the test when Kamailio is not
// installed, unless CI=true, where it fails it; any other problem fails
// the test.
func Start(t testing.TB, o Options) *Kamailio {
	t.Helper()
	inst, err := lookup()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kamailio: %v", err)
		}
		t.Skipf("kamailio: %v", err)
	}
	if o.CertFile == "" || o.KeyFile == "" {
		t.Fatal("kamailio: Options.CertFile and Options.KeyFile are required")
	}
	if o.RequireClientCert && o.CAFile == "" {
		t.Fatal("kamailio: Options.RequireClientCert needs Options.CAFile")
	}
	realm := o.Realm
	if realm == "" {
		realm = DefaultRealm
	}
	udp, err := resolveAddr(o.UDP, "udp")
	if err != nil {
		t.Fatalf("kamailio: Options.UDP: %v", err)
	}
	tlsAddr, err := resolveAddr(o.TLS, "tcp")
	if err != nil {
		t.Fatalf("kamailio: Options.TLS: %v", err)
	}

	dir := t.TempDir()
	tp := tlsParams{
		cert:        filepath.Join(dir, "server.crt"),
		key:         filepath.Join(dir, "server.key"),
		requireCert: o.RequireClientCert,
	}
	copies := [][2]string{{o.CertFile, tp.cert}, {o.KeyFile, tp.key}}
	if o.CAFile != "" {
		tp.ca = filepath.Join(dir, "ca.crt")
		copies = append(copies, [2]string{o.CAFile, tp.ca})
	}
	for _, c := range copies {
		if err := copyFile(c[0], c[1]); err != nil {
			t.Fatalf("kamailio: %v", err)
		}
	}
	// The control socket's path must fit a sockaddr_un (108 bytes): not
	// under t.TempDir, whose names grow with the test's.
	ctlDir, err := os.MkdirTemp("", "kamctl")
	if err != nil {
		t.Fatalf("kamailio: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(ctlDir) })
	k := &Kamailio{
		udp:  udp,
		tls:  tlsAddr,
		cfg:  filepath.Join(dir, "kamailio.cfg"),
		ctl:  filepath.Join(ctlDir, "ctl"),
		log:  &logBuffer{},
		done: make(chan struct{}),
	}
	maxExpires := o.MaxExpires
	if maxExpires <= 0 {
		maxExpires = 86400
	}
	tlsPath := filepath.Join(dir, "tls.cfg")
	if err := os.WriteFile(tlsPath, []byte(tlsCfg(tp)), 0o600); err != nil {
		t.Fatalf("kamailio: %v", err)
	}
	cfg := kamailioCfg(cfgParams{
		modulesDir: inst.modulesDir,
		udp:        udp,
		tls:        tlsAddr,
		tlsCfg:     tlsPath,
		realm:      realm,
		auth:       o.Auth,
		maxExpires: maxExpires,
		ctl:        k.ctl,
	})
	if err := os.WriteFile(k.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatalf("kamailio: %v", err)
	}
	runDir := filepath.Join(dir, "run")
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatalf("kamailio: %v", err)
	}

	if err := check(inst.bin, k.cfg, runDir); err != nil {
		t.Fatalf("kamailio: configuration %s does not pass `kamailio -c`: %v\n--- kamailio.cfg ---\n%s", k.cfg, err, numbered(cfg))
	}

	// Dump the log when the test failed; registered before the stop so
	// that it runs after it and shows the complete log.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kamailio log (%s):\n%s", k.cfg, k.Log())
		}
	})

	k.cmd = exec.Command(inst.bin,
		"-DD", "-E",
		"-f", k.cfg,
		"-P", filepath.Join(dir, "kamailio.pid"),
		"-Y", runDir,
		"-w", dir,
		"-m", "64", "-M", "8",
	)
	k.cmd.Dir = dir
	k.cmd.Stdout = k.log
	k.cmd.Stderr = k.log
	// Its own process group: Kamailio's workers are stopped with it.
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The workers hold the output pipe too; don't let Wait hang on one
	// that outlived the group kill.
	k.cmd.WaitDelay = stopTimeout
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("kamailio: start: %v", err)
	}
	go func() {
		k.err = k.cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(k.stop)

	if err := k.waitReady(); err != nil {
		t.Fatalf("kamailio: %v", err)
	}
	return k
}

// Addr returns the listener of transport "tls" or "udp". It panics on
// another name.
func (k *Kamailio) Addr(transport string) netip.AddrPort {
	switch transport {
	case "tls":
		return k.tls
	case "udp":
		return k.udp
	}
	panic(fmt.Sprintf("kamailio: no %q listener (have tls and udp)", transport))
}

// Log returns everything Kamailio printed so far (stdout and stderr).
func (k *Kamailio) Log() string { return k.log.String() }

// WaitLog waits up to timeout for Kamailio's output to contain substr and
// reports whether it did. Kamailio logs a request before it answers, but
// its output reaches the log asynchronously: use WaitLog, not Log, to
// look for what a request just logged.
func (k *Kamailio) WaitLog(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(k.Log(), substr) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Contact is a binding usrloc holds.
type Contact struct {
	Address string // the Contact URI
	Expires int    // seconds left
}

// Contacts returns the bindings usrloc holds for aor (a user name: the
// script does not use domains), asking the running server with kamcmd
// (ul.lookup over the ctl module's socket). An AoR without bindings
// gives none and no error.
func (k *Kamailio) Contacts(aor string) ([]Contact, error) {
	inst, err := lookup()
	if err != nil {
		return nil, err
	}
	kamcmd := filepath.Join(filepath.Dir(inst.bin), "kamcmd")
	if p, err := exec.LookPath("kamcmd"); err == nil {
		kamcmd = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, kamcmd, "-s", "unix:"+k.ctl, "ul.lookup", "location", aor).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "AOR not found") {
			return nil, nil
		}
		return nil, fmt.Errorf("kamcmd ul.lookup: %v: %s", err, bytes.TrimSpace(out))
	}
	return parseULookup(string(out)), nil
}

// parseULookup reads the Address and Expires lines of kamcmd's ul.lookup
// output, one Contact per Address.
func parseULookup(out string) []Contact {
	var cs []Contact
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Address":
			cs = append(cs, Contact{Address: v})
		case "Expires":
			if len(cs) > 0 {
				fmt.Sscan(v, &cs[len(cs)-1].Expires)
			}
		}
	}
	return cs
}

// ConfigFile returns the path of the generated kamailio.cfg.
func (k *Kamailio) ConfigFile() string { return k.cfg }

// waitReady polls the TLS port until it accepts a TCP connection, the
// process exits or startTimeout passes.
func (k *Kamailio) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-k.done:
			return fmt.Errorf("exited during startup (%v)", k.err)
		default:
		}
		c, err := net.DialTimeout("tcp", k.tls.String(), 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("TLS port %v does not accept connections after %v: %v", k.tls, startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends Kamailio's process group: SIGTERM (Kamailio's main process
// then stops its workers and waits for them), SIGKILL after stopTimeout.
func (k *Kamailio) stop() {
	pgid := k.cmd.Process.Pid
	select {
	case <-k.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-k.done:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-k.done
		}
	}
	if errors.Is(k.err, exec.ErrWaitDelay) {
		// The main process is gone but workers still hold its output
		// pipe, so the group still exists (and its id is still ours).
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// check runs `kamailio -c` on cfg.
func check(bin, cfg, runDir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-c", "-f", cfg, "-Y", runDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n--- output ---\n%s", err, out)
	}
	return nil
}

// resolveAddr applies the defaults of Options.UDP and Options.TLS: network
// is the network that finds a free port ("udp" or "tcp").
func resolveAddr(ap netip.AddrPort, network string) (netip.AddrPort, error) {
	addr := ap.Addr()
	if !addr.IsValid() {
		if ap.Port() != 0 {
			return netip.AddrPort{}, fmt.Errorf("port %d without an address", ap.Port())
		}
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	addr = addr.Unmap()
	if !addr.IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("%v is not a loopback address", addr)
	}
	if ap.Port() != 0 {
		return netip.AddrPortFrom(addr, ap.Port()), nil
	}
	port, err := freePort(network, addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, port), nil
}

// freePort asks the kernel for a free port on addr and releases it.
func freePort(network string, addr netip.Addr) (uint16, error) {
	local := netip.AddrPortFrom(addr, 0).String()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", local)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).AddrPort().Port(), nil
	default:
		l, err := net.Listen("tcp", local)
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).AddrPort().Port(), nil
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// numbered prefixes each line of s with its number, as Kamailio's errors
// cite lines.
func numbered(s string) string {
	var b strings.Builder
	n := 0
	for line := range strings.Lines(s) {
		n++
		fmt.Fprintf(&b, "%4d  %s", n, line)
	}
	return b.String()
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
