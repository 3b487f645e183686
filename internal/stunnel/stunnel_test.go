package stunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/certgen"
	"github.com/sbc-project/sbc/internal/sslscan"
)

// ioTimeout bounds every read, write and handshake of the tests.
const ioTimeout = 10 * time.Second

// pki is the example certificate set written by certgen.Examples, plus a
// client certificate from another CA.
type pki struct {
	dir   string
	roots *x509.CertPool // ca.pem
}

func (p pki) file(name string) string { return filepath.Join(p.dir, name) }

func (p pki) pair(t *testing.T, base string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(p.file(base+".pem"), p.file(base+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	if err := certgen.Examples(dir); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	// "stranger": server and client certificate from another CA, same
	// names as the example set's.
	other, err := certgen.NewCA("other CA", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := other.Issue(certgen.LeafOptions{
		CN:          "stranger",
		DNSNames:    []string{"localhost", "backend.example.test", "sbc.example.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsServer:    true,
		IsClient:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.WriteFiles(dir, "stranger"); err != nil {
		t.Fatal(err)
	}
	return pki{dir: dir, roots: roots}
}

// tlsEchoServer is a Go TLS server on 127.0.0.1 that echoes what it reads
// and reports the client certificate CN of each connection that completed
// its handshake.
type tlsEchoServer struct {
	addr netip.AddrPort
	cns  chan string // one per completed handshake; "" without a certificate
}

func startTLSEcho(t *testing.T, cfg *tls.Config) *tlsEchoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsEchoServer{addr: ln.Addr().(*net.TCPAddr).AddrPort(), cns: make(chan string, 16)}
	serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		cn := ""
		if p := tc.ConnectionState().PeerCertificates; len(p) > 0 {
			cn = p[0].Subject.CommonName
		}
		select {
		case s.cns <- cn:
		default:
		}
		_, _ = io.Copy(tc, tc)
	})
	return s
}

// startEcho is a plain TCP echo server on addr ("127.0.0.1:0" or
// "[::1]:0").
func startEcho(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// serve accepts on ln and runs handle for each connection (deadline
// ioTimeout) until cleanup, which closes the listener and every
// connection and waits for the handlers.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(ioTimeout))
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

var message = []byte("INVITE sip:bob@example.test SIP/2.0\r\n\r\n")

// roundTrip writes message on c and reads it back, within ioTimeout.
func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(message); err != nil {
		return err
	}
	got := make([]byte, len(message))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, message) {
		return errors.New("echo differs: " + string(got))
	}
	return nil
}

// refused checks that err is the end of a connection the far side closed
// or reset, not a timeout (a shim that hangs is not a shim that refuses).
func refused(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("round trip succeeded")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("round trip timed out instead of failing: %v", err)
	}
}

func dialPlain(t *testing.T, ap netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ap.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientShim(t *testing.T) {
	p := newPKI(t)
	backend := startTLSEcho(t, &tls.Config{
		Certificates: []tls.Certificate{p.pair(t, "backend")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.roots,
	})
	stranger := startTLSEcho(t, &tls.Config{
		Certificates: []tls.Certificate{p.pair(t, "stranger")},
	})
	carrier := ClientOptions{
		Connect:  backend.addr,
		CertFile: p.file("carrier.pem"),
		KeyFile:  p.file("carrier-key.pem"),
		CAFile:   p.file("ca.pem"),
	}

	for _, name := range []string{"", "backend.example.test", "127.0.0.1"} {
		label := "server name " + name
		if name == "" {
			label = "no server name"
		}
		t.Run(label, func(t *testing.T) {
			opts := carrier
			opts.ServerName = name
			shim := Client(t, opts)
			if !shim.Addr().Is4() || !shim.Addr().IsLoopback() {
				t.Errorf("shim address %s is not on 127.0.0.1", shim)
			}
			if err := roundTrip(dialPlain(t, shim)); err != nil {
				t.Fatal(err)
			}
			select {
			case cn := <-backend.cns:
				if cn != "carrier" {
					t.Errorf("backend saw client CN %q, want carrier", cn)
				}
			default:
				t.Error("backend reported no handshake") // it reports before echoing
			}
		})
	}

	t.Run("wrong server name", func(t *testing.T) {
		opts := carrier
		opts.ServerName = "sbc.example.test"
		refused(t, roundTrip(dialPlain(t, Client(t, opts))))
	})
	t.Run("wrong server IP", func(t *testing.T) {
		opts := carrier
		opts.ServerName = "::1"
		refused(t, roundTrip(dialPlain(t, Client(t, opts))))
	})
	t.Run("server from another CA", func(t *testing.T) {
		opts := carrier
		opts.Connect = stranger.addr
		refused(t, roundTrip(dialPlain(t, Client(t, opts))))
	})
	t.Run("no client certificate", func(t *testing.T) {
		opts := carrier
		opts.CertFile, opts.KeyFile = "", ""
		refused(t, roundTrip(dialPlain(t, Client(t, opts))))
	})
	t.Run("no verification", func(t *testing.T) {
		// Without CAFile the shim connects to any server.
		shim := Client(t, ClientOptions{Connect: stranger.addr})
		if err := roundTrip(dialPlain(t, shim)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestServerShim(t *testing.T) {
	p := newPKI(t)
	echo := startEcho(t, "127.0.0.1:0")
	required := Server(t, ServerOptions{
		Connect:           echo,
		CertFile:          p.file("sbc.pem"),
		KeyFile:           p.file("sbc-key.pem"),
		CAFile:            p.file("ca.pem"),
		RequireClientCert: true,
	})

	dial := func(t *testing.T, shim netip.AddrPort, cfg *tls.Config) error {
		t.Helper()
		c := dialPlain(t, shim)
		c.SetDeadline(time.Now().Add(ioTimeout))
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		return roundTrip(tc)
	}
	client := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: p.roots, ServerName: "sbc.example.test", Certificates: certs}
	}

	t.Run("client certificate", func(t *testing.T) {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			cfg := client(p.pair(t, "carrier"))
			cfg.MinVersion, cfg.MaxVersion = v, v
			if err := dial(t, required, cfg); err != nil {
				t.Fatalf("%s: %v", tls.VersionName(v), err)
			}
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		refused(t, dial(t, required, client()))
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		cfg := client()
		stranger := p.pair(t, "stranger")
		// A Go client sends no certificate the server's CA list does
		// not name; send it anyway.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &stranger, nil
		}
		refused(t, dial(t, required, cfg))
	})
	t.Run("TLS 1.1", func(t *testing.T) {
		cfg := client(p.pair(t, "carrier"))
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		refused(t, dial(t, required, cfg))
	})
	t.Run("client certificate optional", func(t *testing.T) {
		optional := Server(t, ServerOptions{
			Connect:  echo,
			CertFile: p.file("sbc.pem"),
			KeyFile:  p.file("sbc-key.pem"),
			CAFile:   p.file("ca.pem"),
		})
		if err := dial(t, optional, client()); err != nil {
			t.Fatalf("without a certificate: %v", err)
		}
		if err := dial(t, optional, client(p.pair(t, "carrier"))); err != nil {
			t.Fatalf("with a certificate: %v", err)
		}
	})
	t.Run("IPv6 target", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		ln.Close()
		echo6 := startEcho(t, "[::1]:0")
		shim := Server(t, ServerOptions{Connect: echo6, CertFile: p.file("sbc.pem"), KeyFile: p.file("sbc-key.pem")})
		if err := dial(t, shim, client()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestServiceLines(t *testing.T) {
	connect := netip.MustParseAddrPort("[::1]:5061")
	for _, tc := range []struct {
		name string
		got  func() ([]string, error)
		want []string // nil: an error
	}{
		{"client minimal", func() ([]string, error) { return clientService(ClientOptions{Connect: connect}) },
			[]string{"client = yes", "connect = ::1:5061"}},
		{"client full", func() ([]string, error) {
			return clientService(ClientOptions{Connect: netip.MustParseAddrPort("127.0.0.1:5061"), CertFile: "c.pem", KeyFile: "k.pem",
				CAFile: "ca.pem", ServerName: "sbc.example.test", Extra: []string{"sslVersionMax = TLSv1.2"}})
		}, []string{"client = yes", "connect = 127.0.0.1:5061", "cert = c.pem", "key = k.pem", "CAfile = ca.pem",
			"verifyChain = yes", "sni = sbc.example.test", "checkHost = sbc.example.test", "sslVersionMax = TLSv1.2"}},
		{"client IP name", func() ([]string, error) {
			return clientService(ClientOptions{Connect: connect, CAFile: "ca.pem", ServerName: "::1"})
		}, []string{"client = yes", "connect = ::1:5061", "CAfile = ca.pem", "verifyChain = yes", "sni =", "checkIP = ::1"}},
		{"client no connect", func() ([]string, error) { return clientService(ClientOptions{}) }, nil},
		{"client cert without key", func() ([]string, error) {
			return clientService(ClientOptions{Connect: connect, CertFile: "c.pem"})
		}, nil},
		{"server", func() ([]string, error) {
			return serverService(ServerOptions{Connect: connect, CertFile: "c.pem", KeyFile: "k.pem", CAFile: "ca.pem", RequireClientCert: true})
		}, []string{"connect = ::1:5061", "cert = c.pem", "key = k.pem", "CAfile = ca.pem", "verifyChain = yes", "requireCert = yes"}},
		{"server optional client cert", func() ([]string, error) {
			return serverService(ServerOptions{Connect: connect, CertFile: "c.pem", KeyFile: "k.pem", CAFile: "ca.pem"})
		}, []string{"connect = ::1:5061", "cert = c.pem", "key = k.pem", "CAfile = ca.pem", "verifyChain = yes", "requireCert = no"}},
		{"server no cert", func() ([]string, error) { return serverService(ServerOptions{Connect: connect}) }, nil},
		{"server require without CA", func() ([]string, error) {
			return serverService(ServerOptions{Connect: connect, CertFile: "c.pem", KeyFile: "k.pem", RequireClientCert: true})
		}, nil},
	} {
		got, err := tc.got()
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: no error, lines %q", tc.name, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestAvailable(t *testing.T) {
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Setenv("PATH", t.TempDir())
	if Available() == nil {
		t.Error("Available with an empty PATH")
	}
}

// fatalTB records Fatal calls instead of failing the test, ending the
// goroutine as testing.T does.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestBadConfigurationFails(t *testing.T) {
	p := newPKI(t)
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Server(f, ServerOptions{
			Connect:  netip.MustParseAddrPort("127.0.0.1:9"),
			CertFile: p.file("sbc.pem"),
			KeyFile:  p.file("missing-key.pem"),
		})
	}()
	<-done // bounded: stunnel exits at once on a key it cannot read
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.Contains(f.msg, "exited before binding") || !strings.Contains(f.msg, "missing-key.pem") {
		t.Fatalf("Fatal message does not say why:\n%s", f.msg)
	}
}

// TestServerShimScan checks with sslscan what a Server shim accepts: TLS
// 1.2 and 1.3 and nothing weak by default, TLS 1.3 alone when Extra
// overrides sslVersionMin (a later option wins in stunnel).
func TestServerShimScan(t *testing.T) {
	sslscan.Require(t)
	p := newPKI(t)
	echo := startEcho(t, "127.0.0.1:0")
	for _, tc := range []struct {
		extra []string
		want  []string
	}{
		{nil, []string{sslscan.TLSv12, sslscan.TLSv13}},
		{[]string{"sslVersionMin = TLSv1.3"}, []string{sslscan.TLSv13}},
	} {
		shim := Server(t, ServerOptions{Connect: echo, CertFile: p.file("sbc.pem"), KeyFile: p.file("sbc-key.pem"), Extra: tc.extra})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := sslscan.Scan(ctx, shim.String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if got := r.EnabledProtocols(); !slices.Equal(got, tc.want) {
			t.Errorf("Extra %q: protocols %v, want %v", tc.extra, got, tc.want)
		}
		if w := r.Weak(); w != nil {
			t.Errorf("Extra %q: weak:\n%s", tc.extra, strings.Join(w, "\n"))
		}
	}

	// A shim that requires client certificates: sslscan finds TLS 1.2
	// suites only when it presents one (without, the TLS 1.2 handshakes
	// fail and it lists TLS 1.3 suites alone).
	mtls := Server(t, ServerOptions{Connect: echo, CertFile: p.file("sbc.pem"), KeyFile: p.file("sbc-key.pem"),
		CAFile: p.file("ca.pem"), RequireClientCert: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := sslscan.Scan(ctx, mtls.String(), "--certs="+p.file("carrier.pem"), "--pk="+p.file("carrier-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.EnabledProtocols(); !slices.Equal(got, []string{sslscan.TLSv12, sslscan.TLSv13}) {
		t.Errorf("mTLS: protocols %v", got)
	}
	if len(r.CiphersFor(sslscan.TLSv12)) == 0 {
		t.Errorf("mTLS with a client certificate: no TLS 1.2 suite found: %+v", r.Ciphers)
	}
	if w := r.Weak(); w != nil {
		t.Errorf("mTLS: weak:\n%s", strings.Join(w, "\n"))
	}
}
