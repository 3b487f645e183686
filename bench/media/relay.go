package media

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sbc-project/sbc/srtp"
	"github.com/sbc-project/sbc/srtp/kfwd"
)

// Profile is a leg's media profile.
type Profile string

// The profiles a leg can have.
const (
	Plain Profile = "plain" // RTP/AVP
	SDES  Profile = "sdes"  // SRTP keyed by a=crypto, AES_CM_128_HMAC_SHA1_80
	DTLS  Profile = "dtls"  // DTLS-SRTP, rtcp-mux, the relay passive (server)
)

func (p Profile) valid() bool { return p == Plain || p == SDES || p == DTLS }

// RelaySetup is the first line the harness writes to the relay child:
// how many streams, of which profiles, towards which phones.
type RelaySetup struct {
	Streams int
	A, B    Profile
	// RemoteA and RemoteB are the phones' addresses, one per stream, or
	// one for all streams.
	RemoteA, RemoteB []netip.AddrPort
	// PeerFingerprint is the phones' DTLS certificate fingerprint (one
	// certificate for all DTLS phones), for DTLS legs.
	PeerFingerprint string
	// Relay is passed to srtp.SetRelayOptions before any stream.
	Relay srtp.RelayOptions
	// Kernel: attach srtp/kfwd to lo and give it to every stream.
	Kernel bool
}

func (s RelaySetup) remote(list []netip.AddrPort, i int) netip.AddrPort {
	if len(list) == 1 {
		return list[0]
	}
	return list[i]
}

// RelayStream is one stream as the child set it up.
type RelayStream struct {
	// A and B are the relay's RTP addresses on each leg: what the phone
	// of that leg sends to.
	A, B netip.AddrPort
	// For an SDES leg, the a=crypto the phone encrypts with (PhoneSend)
	// and decrypts with (PhoneRecv).
	PhoneSendA, PhoneRecvA, PhoneSendB, PhoneRecvB string `json:",omitempty"`
}

// RelayReply answers RelaySetup.
type RelayReply struct {
	Err         string `json:",omitempty"`
	Pid         int
	Fingerprint string // the relay's DTLS certificate
	Streams     []RelayStream
	// Before is the child's memory with no stream yet.
	Before MemStats
}

// MemStats is the relay child's memory, after a GC.
type MemStats struct {
	HeapAlloc  uint64 // live heap bytes
	HeapSys    uint64
	Goroutines int
	RSS        uint64 // VmRSS, bytes
}

// RelayStats answers the "stats" command.
type RelayStats struct {
	Mem MemStats
	// Summed over streams and legs.
	Packets, Forwarded uint64
	// Offloaded: relayed by the kernel path.
	Offloaded  uint64
	Dropped    map[string]uint64
	DTLSDone   int
	DTLSFailed []string `json:",omitempty"`
	// Loops is the relay loops' batching since the child started
	// (empty with reader goroutines).
	Loops LoopSummary
}

// LoopSummary prints srtp.RelayLoopStats for the run log.
type LoopSummary srtp.RelayLoopStats

func (l LoopSummary) String() string {
	if l.Loops == 0 {
		return ", reader goroutines"
	}
	return fmt.Sprintf(", %d loops: %.2f packets per wake-up, %.2f per poll", l.Loops,
		float64(l.Packets)/float64(max(l.Wakeups, 1)), float64(l.Packets)/float64(max(l.Polls, 1)))
}

// ChildEnv, set to "1" in a process's environment, makes
// RunChildIfAsked run the relay child instead of the program.
const ChildEnv = "SBC_MEDIA_RELAY_CHILD"

// RunChildIfAsked runs the relay child and exits if ChildEnv is set: the
// first call in the main (or TestMain) of a program that starts itself as
// the relay with StartRelay.
func RunChildIfAsked() {
	if os.Getenv(ChildEnv) != "1" {
		return
	}
	if err := RelayChild(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "relay child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// RelayChild is the SBC's media relay as a process of its own, so that
// its CPU time is its alone: it reads a RelaySetup line, builds the
// streams as package sbc does (a port pool on 127.0.0.1, leg A learning,
// SRTP legs normalised, DTLS legs on rtcp-mux and passive, plain and SDES
// legs with a separate RTCP socket), writes a RelayReply line, then
// answers "ready" (all DTLS legs keyed) and "stats" lines until its input
// ends, when it closes the streams and returns.
func RelayChild(in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	if !sc.Scan() {
		return errors.New("no setup line")
	}
	var setup RelaySetup
	if err := json.Unmarshal(sc.Bytes(), &setup); err != nil {
		return err
	}
	srtp.SetRelayOptions(setup.Relay)
	r := &relay{}
	reply := RelayReply{Pid: os.Getpid(), Before: readMem()}
	streams, err := r.build(setup)
	if err != nil {
		reply.Err = err.Error()
	} else {
		reply.Fingerprint, reply.Streams = r.cert.Fingerprint.String(), streams
	}
	if err := enc.Encode(reply); err != nil || reply.Err != "" {
		r.close()
		return err
	}
	defer r.close()
	for sc.Scan() {
		switch cmd := strings.TrimSpace(sc.Text()); cmd {
		case "ready":
			if err := r.waitDTLS(setup, 30*time.Second); err != nil {
				_ = enc.Encode(map[string]string{"Err": err.Error()})
				continue
			}
			_ = enc.Encode(map[string]string{})
		case "stats":
			_ = enc.Encode(r.stats())
		default:
			_ = enc.Encode(map[string]string{"Err": "unknown command " + strconv.Quote(cmd)})
		}
	}
	return sc.Err()
}

type relay struct {
	kernel  *kfwd.Forwarder
	cert    *srtp.Certificate
	streams []*srtp.Stream
	mu      sync.Mutex
	done    int
	failed  []string
	cond    *sync.Cond
}

func (r *relay) close() {
	for _, s := range r.streams {
		_ = s.Close()
	}
	if r.kernel != nil {
		_ = r.kernel.Close()
	}
}

func (r *relay) onDTLS(res srtp.DTLSResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.Err != nil {
		r.failed = append(r.failed, res.Err.Error())
	} else {
		r.done++
	}
	r.cond.Broadcast()
}

func (r *relay) waitDTLS(setup RelaySetup, limit time.Duration) error {
	want := 0
	for _, p := range []Profile{setup.A, setup.B} {
		if p == DTLS {
			want += setup.Streams
		}
	}
	deadline := time.Now().Add(limit)
	stop := time.AfterFunc(limit, func() { r.mu.Lock(); r.cond.Broadcast(); r.mu.Unlock() })
	defer stop.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.done < want && len(r.failed) == 0 && time.Now().Before(deadline) {
		r.cond.Wait()
	}
	switch {
	case len(r.failed) > 0:
		return fmt.Errorf("DTLS: %d failed, first: %s", len(r.failed), r.failed[0])
	case r.done < want:
		return fmt.Errorf("DTLS: %d of %d handshakes done", r.done, want)
	}
	return nil
}

// ports returns a pool big enough for n streams' legs, on a random range.
func poolFor(n int) (*srtp.PortPool, error) {
	lo, hi := randomRange(4*n + 200)
	return srtp.NewPortPool(srtp.PortPoolConfig{IP: netip.AddrFrom4([4]byte{127, 0, 0, 1}), Min: lo, Max: hi, Quarantine: time.Minute})
}

// randomRange returns an even-started range of n ports between 20000 and
// 60000.
func randomRange(n int) (int, int) {
	lo := 20000 + 2*rand.IntN((40000-n)/2)
	return lo, lo + n - 1
}

func (r *relay) build(setup RelaySetup) ([]RelayStream, error) {
	r.cond = sync.NewCond(&r.mu)
	if setup.Streams <= 0 || !setup.A.valid() || !setup.B.valid() {
		return nil, fmt.Errorf("bad setup: %d streams, %q/%q", setup.Streams, setup.A, setup.B)
	}
	var err error
	if r.cert, err = srtp.GenerateCertificate(); err != nil {
		return nil, err
	}
	var peerFP []srtp.Fingerprint
	if setup.A == DTLS || setup.B == DTLS {
		fp, err := srtp.ParseFingerprint(setup.PeerFingerprint)
		if err != nil {
			return nil, err
		}
		peerFP = []srtp.Fingerprint{fp}
	}
	if setup.Kernel {
		if r.kernel, err = kfwd.Open(kfwd.Config{Interfaces: []string{"lo"}}); err != nil {
			return nil, err
		}
	}
	pool, err := poolFor(setup.Streams)
	if err != nil {
		return nil, err
	}
	out := make([]RelayStream, setup.Streams)
	for i := range setup.Streams {
		var lc [2]srtp.LegConfig
		var lines [2][2]string
		for j, p := range []Profile{setup.A, setup.B} {
			c := &lc[j]
			c.Remote = setup.remote([][]netip.AddrPort{setup.RemoteA, setup.RemoteB}[j], i)
			c.Learn = j == 0 // the SBC's A leg (the caller's) learns; B does not
			c.Normalize = p != Plain
			if c.Ports, err = pool.Allocate(p == DTLS); err != nil {
				return nil, err
			}
			switch p {
			case SDES:
				ours, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
				if err != nil {
					return nil, err
				}
				theirs, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
				if err != nil {
					return nil, err
				}
				if c.Transform, err = srtp.NewSDES(ours, theirs); err != nil {
					return nil, err
				}
				lines[j] = [2]string{theirs.String(), ours.String()}
			case DTLS:
				if c.Handler, err = srtp.NewDTLS(srtp.DTLSConfig{Certificate: r.cert, Setup: srtp.SetupPassive,
					RemoteSetup: srtp.SetupActive, RemoteFingerprints: peerFP, OnDone: r.onDTLS}); err != nil {
					return nil, err
				}
			}
		}
		sc := srtp.StreamConfig{A: lc[0], B: lc[1]}
		if r.kernel != nil {
			sc.Kernel = r.kernel
		}
		s, err := srtp.NewStream(sc)
		if err != nil {
			return nil, err
		}
		r.streams = append(r.streams, s)
		a, _ := s.LocalAddr(srtp.LegA)
		b, _ := s.LocalAddr(srtp.LegB)
		out[i] = RelayStream{A: a, B: b, PhoneSendA: lines[0][0], PhoneRecvA: lines[0][1], PhoneSendB: lines[1][0], PhoneRecvB: lines[1][1]}
	}
	return out, nil
}

func (r *relay) stats() RelayStats {
	st := RelayStats{Mem: readMem(), Dropped: map[string]uint64{}, Loops: LoopSummary(srtp.LoopStats())}
	for _, s := range r.streams {
		ss := s.Stats()
		for _, l := range []srtp.LegStats{ss.A, ss.B} {
			st.Packets += l.Packets
			st.Forwarded += l.Forwarded
			st.Offloaded += l.Offloaded
			for reason, n := range l.Dropped {
				if n > 0 {
					st.Dropped[srtp.DropReason(reason).String()] += n
				}
			}
		}
	}
	r.mu.Lock()
	st.DTLSDone, st.DTLSFailed = r.done, append([]string(nil), r.failed...)
	r.mu.Unlock()
	return st
}

func readMem() MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	st := MemStats{HeapAlloc: m.HeapAlloc, HeapSys: m.HeapSys, Goroutines: runtime.NumGoroutine()}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				st.RSS = kb << 10
			}
		}
	}
	return st
}
