package browser

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultTimeout bounds a Register or Call whose context has no deadline.
const DefaultTimeout = 60 * time.Second

// Errors reported in Result.Error when the WebSocket did not carry the
// exchange to its end.
const (
	// ErrConnectionFailed: the WebSocket never opened (TCP or TLS failed, or
	// the server refused the upgrade, e.g. 403 for a foreign Origin).
	ErrConnectionFailed = "connection failed"
	// ErrWebSocketClosed: the WebSocket opened and closed before the result.
	ErrWebSocketClosed = "WebSocket closed"
)

// RegisterOptions says what the browser registers and where.
type RegisterOptions struct {
	// WSSURL is the SIP-over-WebSocket server, e.g. wss://127.0.0.1:8443;
	// its host must be 127.0.0.1, [::1] or localhost (no other name
	// resolves). Its certificate is not checked.
	WSSURL string
	// URI is the address of record, e.g. sip:alice@example.test.
	URI string
	// Password answers a digest challenge (optional).
	Password string
	// AuthUser is the digest user name; empty means the user part of URI.
	AuthUser string
	// Expires is the Expires of the REGISTER; 0 means JsSIP's 600.
	Expires int
	// Origin is the origin of the page that runs JsSIP, and so the Origin
	// header of the WebSocket upgrade: "https://host" or "https://host:port",
	// any host (chromium resolves it to the page server on 127.0.0.1, no DNS
	// is asked). Empty means https://127.0.0.1:<the page server's port>.
	// Result.Origin is the origin the page had.
	Origin string
}

// CallOptions says what the browser calls, from where.
type CallOptions struct {
	// WSSURL, URI, Password, AuthUser and Origin are as in RegisterOptions.
	WSSURL   string
	URI      string
	Password string
	AuthUser string
	Origin   string
	// Target is the request URI of the INVITE, e.g. sip:100@example.test.
	Target string
	// Register makes the browser register (and wait for the 2xx) before it
	// calls; by default it calls as soon as the WebSocket is open.
	Register bool
	// Expires is the Expires of that REGISTER; 0 means JsSIP's 600.
	Expires int
	// Media makes the call carry media: ICE gathers loopback host
	// candidates (chromium runs with --allow-loopback-in-peer-connection)
	// and the page drops every candidate of another address from its offer
	// (see Result.DroppedCandidates), so the peer learns loopback
	// addresses only. Chromium still sends checks from its sockets on the
	// machine's other addresses, which the peer may answer: run the test
	// in a network namespace with only lo to keep ICE on loopback. The
	// remote audio is played (to no device), and
	// getStats is read into Result.Media before the hang-up. By default
	// the call gathers no candidate (relay only, no TURN server): the
	// offer names no address and no media flows.
	Media bool
	// HoldFor is how long the browser keeps the call up after the ACK
	// before it reads its statistics and hangs up; 0 hangs up at once.
	HoldFor time.Duration
	// AudioFile is a WAV file chromium's fake microphone plays in a loop
	// (--use-file-for-fake-audio-capture); empty means chromium's own
	// beeps.
	AudioFile string
}

// AnswerOptions says where the browser registers to take calls, and how
// it ends them.
type AnswerOptions struct {
	// WSSURL, URI, Password, AuthUser, Origin and Expires are as in
	// RegisterOptions.
	WSSURL   string
	URI      string
	Password string
	AuthUser string
	Origin   string
	Expires  int
	// Hangups plans the calls the browser answers, in order: HangupLocal
	// (it hangs up HoldFor after the ACK) or HangupRemote (it waits for
	// the caller's BYE). The page reports once that many calls ended.
	Hangups []string
	// HoldFor is how long a HangupLocal call stays up before the BYE.
	HoldFor time.Duration
}

// Who ends a call the browser answers (AnswerOptions.Hangups).
const (
	HangupLocal  = "local"
	HangupRemote = "remote"
)

// AnsweredCall is one call the browser answered (Result.Calls).
type AnsweredCall struct {
	// Hangup is the plan (HangupLocal or HangupRemote).
	Hangup string `json:"hangup"`
	// RequestLine is the INVITE's method and request-URI.
	RequestLine string `json:"requestLine"`
	// EndedBy is JsSIP's originator of the end: "local" or "remote"
	// ("system" on a failure of its own).
	EndedBy string `json:"endedBy"`
	// Cause is JsSIP's cause of the end ("Terminated", "BYE", or a
	// failure's).
	Cause string `json:"cause"`
	// ByeStatus is the status of the browser's BYE (HangupLocal), 0 when
	// no answer came within 5 s.
	ByeStatus int `json:"byeStatus"`
}

// MediaStats is what RTCPeerConnection.getStats() said just before the
// hang-up of a Call with Media.
type MediaStats struct {
	// PacketsReceived, BytesReceived, PacketsLost, JitterSeconds,
	// TotalAudioEnergy and TotalSamplesReceived are the audio
	// inbound-rtp's: packets decrypted (SRTP) and taken by the jitter
	// buffer, and their decoded audio (energy 0 means silence).
	PacketsReceived      int64   `json:"packetsReceived"`
	BytesReceived        int64   `json:"bytesReceived"`
	PacketsLost          int64   `json:"packetsLost"`
	JitterSeconds        float64 `json:"jitter"`
	TotalAudioEnergy     float64 `json:"totalAudioEnergy"`
	TotalSamplesReceived int64   `json:"totalSamplesReceived"`
	// Codec is the inbound stream's codec (e.g. "audio/PCMU").
	Codec string `json:"codec"`
	// PacketsSent is the audio outbound-rtp's.
	PacketsSent int64 `json:"packetsSent"`
	// DTLSState, SRTPCipher and DTLSRole are the transport's (e.g.
	// "connected", "AES_CM_128_HMAC_SHA1_80", "client").
	DTLSState  string `json:"dtlsState"`
	SRTPCipher string `json:"srtpCipher"`
	DTLSRole   string `json:"dtlsRole"`
	// ICEState is the transport's iceState.
	ICEState string `json:"iceState"`
	// LocalCandidate and RemoteCandidate are the selected pair's
	// addresses, "ip:port".
	LocalCandidate  string `json:"localCandidate"`
	RemoteCandidate string `json:"remoteCandidate"`
	// Raw is every report of getStats, for a failing test's log.
	Raw json.RawMessage `json:"raw"`
}

// Result is what the page reported.
type Result struct {
	// Origin is the origin of the page (the Origin of the WebSocket upgrade).
	Origin string `json:"origin"`
	// Status is the final SIP status code of the REGISTER (or of the INVITE
	// for Call), after any digest challenge was answered; 0 when none came.
	Status int    `json:"status"`
	Reason string `json:"reason"`
	// Registered is true when JsSIP took a 2xx to its REGISTER as a
	// registration: it ignores one that does not list its Contact (then
	// Status is that 2xx and Cause says so).
	Registered bool `json:"registered"`
	// Cause is JsSIP's cause when it failed (e.g. "Rejected", "Busy",
	// "Request Timeout", "Connection Error", "Bad Media Description").
	Cause string `json:"cause"`
	// Error is set when the WebSocket failed: ErrConnectionFailed or
	// ErrWebSocketClosed, or a page error ("page error: ...").
	Error string `json:"error"`
	// WSCloseCode is the WebSocket close code with Error (1006 when the
	// handshake was refused or the connection dropped).
	WSCloseCode int `json:"wsCloseCode"`
	// Provisional lists the 1xx status codes a Call received.
	Provisional []int `json:"provisional"`
	// ByeStatus is the status of the BYE the browser sends after a Call was
	// answered 2xx (0 when no response came within 5 s).
	ByeStatus int `json:"byeStatus"`
	// Messages are the SIP messages carried over the WebSocket, in order.
	Messages []Message `json:"messages"`
	// Console is what the page logged (JsSIP's debug output included).
	Console []string `json:"console"`
	// UserAgent is the browser's navigator.userAgent.
	UserAgent string `json:"userAgent"`
	// Media is the call's statistics (Call with Media, once answered).
	Media *MediaStats `json:"media"`
	// DroppedCandidates are the a=candidate lines of a non-loopback
	// address the page removed from its offer (Call with Media).
	DroppedCandidates []string `json:"droppedCandidates"`
	// Calls are the calls an Answer took, in order.
	Calls []AnsweredCall `json:"calls"`
	// BrowserLog is chromium's own output (its copies of console lines
	// left out), e.g. WebRTC's warnings of SRTP packets that failed to
	// decrypt.
	BrowserLog string `json:"-"`
}

// Message is one SIP message seen by the browser's WebSocket.
type Message struct {
	// Dir is "sent" or "received".
	Dir  string `json:"dir"`
	Text string `json:"text"`
}

// Register starts headless chromium on a page running JsSIP, which connects
// to opts.WSSURL and registers opts.URI. It returns what the page reported:
// a SIP final status, or an Error when the WebSocket failed. The error is
// for the harness failing (ctx done, chromium died). Without chromium or
// the JsSIP bundle the test is skipped, or failed when CI=true. Call it from
// the test's goroutine.
func Register(ctx context.Context, t testing.TB, opts RegisterOptions) (*Result, error) {
	t.Helper()
	return run(ctx, t, opts.Origin, pageConfig{
		Action:   "register",
		WSSURL:   opts.WSSURL,
		URI:      opts.URI,
		Password: opts.Password,
		AuthUser: opts.AuthUser,
		Expires:  opts.Expires,
	})
}

// Call is Register's twin for an INVITE to opts.Target with a fake audio
// stream. Its Result has the final status of the INVITE; after a 2xx the
// browser acknowledges it, hangs up and reports the BYE's status too. A
// 2xx must carry an SDP answer chromium accepts: see AnswerSDP.
func Call(ctx context.Context, t testing.TB, opts CallOptions) (*Result, error) {
	t.Helper()
	return run(ctx, t, opts.Origin, pageConfig{
		Action:   "call",
		WSSURL:   opts.WSSURL,
		URI:      opts.URI,
		Password: opts.Password,
		AuthUser: opts.AuthUser,
		Expires:  opts.Expires,
		Target:   opts.Target,
		Register: opts.Register,
		Media:    opts.Media,
		HoldMS:   opts.HoldFor.Milliseconds(),
		audio:    opts.AudioFile,
	})
}

// Answer starts a browser that registers opts.URI over opts.WSSURL and
// answers the calls that come to it, ending each as opts.Hangups says. It
// returns once they all ended (Result.Calls, and every SIP message in
// Result.Messages), or the page failed. The calls are the test's to make,
// from another goroutine, once the registration is in place (e.g. seen at
// the registrar): Answer blocks. A registration that fails is reported at
// once (Status, Cause).
func Answer(ctx context.Context, t testing.TB, opts AnswerOptions) (*Result, error) {
	t.Helper()
	return run(ctx, t, opts.Origin, pageConfig{
		Action:   "answer",
		WSSURL:   opts.WSSURL,
		URI:      opts.URI,
		Password: opts.Password,
		AuthUser: opts.AuthUser,
		Expires:  opts.Expires,
		Hangups:  opts.Hangups,
		HoldMS:   opts.HoldFor.Milliseconds(),
	})
}

// pageConfig is handed to page.js as window.HARNESS.
type pageConfig struct {
	Action   string   `json:"action"`
	WSSURL   string   `json:"wssURL"`
	URI      string   `json:"uri"`
	Password string   `json:"password,omitempty"`
	AuthUser string   `json:"authUser,omitempty"`
	Expires  int      `json:"expires,omitempty"`
	Target   string   `json:"target,omitempty"`
	Register bool     `json:"register,omitempty"`
	Media    bool     `json:"media,omitempty"`
	HoldMS   int64    `json:"holdMs,omitempty"`
	Hangups  []string `json:"hangups,omitempty"`
	audio    string   // chromium's fake microphone file (a flag, not the page's)
}

//go:embed page.js
var pageJS []byte

// Require skips the test when chromium or the JsSIP bundle is missing (when
// CI=true it fails it instead). Register and Call do this themselves; a test
// calls it early to skip before it sets anything up.
func Require(t testing.TB) {
	t.Helper()
	if _, _, err := locate(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// locate finds the chromium binary and the JsSIP bundle.
func locate() (chromium, bundle string, err error) {
	chromium, err = chromiumPath()
	if err != nil {
		return "", "", err
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", "", errors.New("browser: cannot find the package's source directory")
	}
	bundle = filepath.Join(filepath.Dir(file), "js", "dist", "jssip.js")
	if _, err := os.Stat(bundle); err != nil {
		return "", "", fmt.Errorf("browser: JsSIP bundle missing (run npm ci in internal/browser/js): %v", err)
	}
	return chromium, bundle, nil
}

// chromiumPath prefers the binary itself over Debian's /usr/bin/chromium
// wrapper script, which adds flags of its own (remote extensions).
// $CHROMIUM overrides both.
func chromiumPath() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("browser: $CHROMIUM=%s is not an executable file", p)
		}
		return p, nil
	}
	if p := "/usr/lib/chromium/chromium"; isExecutable(p) {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("browser: chromium not found (install the Debian package chromium)")
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// pageOrigin parses the Origin option into the origin and the host:port
// chromium must map to the page server. An empty origin maps nothing.
func pageOrigin(origin string, serverPort int) (string, string, error) {
	if origin == "" {
		return "https://127.0.0.1:" + strconv.Itoa(serverPort), "", nil
	}
	u, err := url.Parse(origin)
	if err != nil {
		return "", "", fmt.Errorf("browser: Origin %q: %v", origin, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("browser: Origin %q is not https://host[:port]", origin)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "https://" + u.Host, host + ":" + port, nil
}

func run(ctx context.Context, t testing.TB, origin string, cfg pageConfig) (*Result, error) {
	t.Helper()
	Require(t)
	chromium, bundle, err := locate()
	if err != nil {
		return nil, err
	}
	jssip, err := os.ReadFile(bundle)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}

	results := make(chan *Result, 1)
	var page []byte
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /page.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(pageJS)
	})
	mux.HandleFunc("GET /jssip.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(jssip)
	})
	mux.HandleFunc("POST /result", func(w http.ResponseWriter, r *http.Request) {
		var res Result
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20)).Decode(&res); err != nil {
			res = Result{Error: "harness: bad result from the page: " + err.Error()}
		}
		select {
		case results <- &res:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pageOrig, mapFrom, err := pageOrigin(origin, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if page, err = pageHTML(cfg); err != nil {
		ln.Close()
		return nil, err
	}
	srv := httptest.NewUnstartedServer(mux)
	_ = srv.Listener.Close() // its own, maybe on [::1]
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()

	// The first rule that matches wins. The origin's host goes to the page
	// server; loopback stays itself; every other name resolves to nothing,
	// so chromium asks no DNS server. (No EXCLUDE: an exclusion would also
	// undo the origin's mapping when its host is a loopback one. A rule's
	// pattern matches the host, ::1 without brackets, or host:port, [::1]:N
	// with them.)
	var rules []string
	if mapFrom != "" {
		rules = append(rules, "MAP "+mapFrom+" "+ln.Addr().String())
	}
	rules = append(rules, "MAP 127.0.0.1 127.0.0.1", "MAP localhost localhost", "MAP ::1 [::1]", "MAP * ~NOTFOUND")
	args := []string{
		"--headless=new",
		"--no-sandbox", // root in CI and here
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--ignore-certificate-errors", // the page server's and the WSS server's
		"--user-data-dir=" + t.TempDir(),
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-default-apps",
		"--disable-extensions",
		"--disable-sync",
		"--no-proxy-server",
		"--disable-quic",
		"--host-resolver-rules=" + strings.Join(rules, ", "),
		// getUserMedia gets a fake microphone without asking.
		"--use-fake-device-for-media-stream",
		"--use-fake-ui-for-media-stream",
		"--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter",
		"--enable-logging=stderr",
		"--v=0",
	}
	if cfg.Media {
		// Loopback host candidates (chromium gathers none by default),
		// and the remote audio played without a user gesture.
		args = append(args, "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required")
	}
	if cfg.audio != "" {
		args = append(args, "--use-file-for-fake-audio-capture="+cfg.audio)
	}
	args = append(args, pageOrig+"/")
	stderr := &tailBuffer{max: 1 << 20}
	cmd := exec.Command(chromium, args...)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("browser: start chromium: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Errorf("browser: chromium (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
	}

	var res *Result
	select {
	case res = <-results:
		stop()
	case err = <-exited:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what it left behind
		err = fmt.Errorf("browser: chromium exited before the page reported (%v)", err)
	case <-ctx.Done():
		stop()
		err = fmt.Errorf("browser: no result from the page: %w", ctx.Err())
	}
	if err != nil {
		t.Logf("browser: chromium %s\nits output:\n%s", strings.Join(args, " "), stderr.String())
		return nil, err
	}
	res.Origin = pageOrig
	res.BrowserLog = withoutConsole(stderr.String())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser: page console (%s):\n%s", pageOrig, strings.Join(res.Console, "\n"))
			t.Logf("browser: chromium output (console lines left out):\n%s", withoutConsole(stderr.String()))
		}
	})
	return res, nil
}

func pageHTML(cfg pageConfig) ([]byte, error) {
	// json.Marshal escapes <, > and &, so the config cannot end the script.
	j, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sbc browser harness</title>\n")
	b.WriteString("<script>window.HARNESS = ")
	b.Write(j)
	b.WriteString(";</script>\n")
	// page.js first: it captures the console before JsSIP's debug module
	// takes hold of console.debug.
	b.WriteString("<script src=\"/page.js\"></script>\n<script src=\"/jssip.js\"></script>\n")
	b.WriteString("</head><body></body></html>\n")
	return b.Bytes(), nil
}

// withoutConsole drops chromium's copies of the page's console lines.
func withoutConsole(log string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(log, "\n") {
		if !strings.Contains(line, ":INFO:CONSOLE") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	if over := len(b.b) - b.max; over > 0 {
		b.b = append(b.b[:0], b.b[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
