package sbc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/topology"
)

// Options configure an SBC beyond its policy.
type Options struct {
	// Logger for the SBC's own lines (JSON recommended). Default: JSON on
	// stderr at the policy's log_level, which follows log_level on every
	// reload. A Logger given here is used as it is: log_level does not
	// apply to it, unless its handler's level is LogLevel (below).
	Logger *slog.Logger
	// LogLevel, if not nil, is set to the policy's log_level by New and
	// by every reload. Give it as the Level of your Logger's handler to
	// have log_level apply to that Logger; without a Logger, the default
	// one uses it.
	LogLevel *slog.LevelVar
	// Events, if not nil, receives every operator event (package events)
	// besides the outputs the policy configures.
	Events events.Sink
	// Version is the build's version, reported by the admin API.
	Version string
	// UDPReaders is the number of goroutines reading each UDP listener
	// socket; each handles what it read, in place (no goroutine per
	// message: endpoint.go), and they take turns (udppeers.go). Default
	// (0): one per core, at most four (defaultUDPReaders).
	UDPReaders int
	// ManageGC applies the policy's server.gc_heap_floor and
	// server.memory_limit to the process's garbage collector, at Start
	// and at every reload (gcpace.go). They are process-wide: set it on
	// one SBC per process (sbc run does).
	ManageGC bool
}

// defaultUDPReaders is one reader per core for each UDP listener socket,
// at least one and at most maxUDPReaders. Readers take turns
// (udppeers.go): one reads while the socket keeps up, the others help
// only while datagrams wait in its receive queue, so an extra reader
// costs no wake-up while it is not needed.
func defaultUDPReaders(procs int) int {
	return min(max(procs, 1), maxUDPReaders)
}

// maxUDPReaders bounds the default readers per socket: past a few, more
// helpers only contend for the socket's read (measured up to two cores,
// BENCHMARKS.md).
const maxUDPReaders = 4

// SBC is the session border controller: one endpoint per realm, the call
// table, and the current policy snapshot.
type SBC struct {
	// manageGC: Options.ManageGC.
	manageGC bool
	// udpReaders: Options.UDPReaders, defaulted.
	udpReaders int
	log        *slog.Logger
	sipLog     *slog.Logger
	metrics    *Metrics

	state   atomic.Pointer[snapshot]
	targets targetSet
	def     *defence
	// outbound counts outbound calls and minutes for the caps (outbound.go).
	outbound outboundCaps
	// regs is the registration cache of remote users (regcache.go);
	// regPending counts the REGISTERs waiting for a registrar.
	regs       *regCache
	regPending atomic.Int64
	realms     map[string]*endpoint // fixed at New: listeners change only with a restart

	calls *callTable
	// hangups counts the BYE and CANCEL transactions in flight, which
	// Close waits for (bounded).
	hangups atomic.Int64

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	admin   *adminServer
	fast    *fastPath
	conns   connTable // open connections of peers (conns.go)

	media    *mediaPlane // relay port pools by realm (media.go)
	tls      *tlsFiles   // certificates, keys and CA bundles in service
	tlsPeers sync.Map    // peerKey → *tlsPeer: verified client certificates of open TLS/WSS connections

	reload reloadState // see reload.go

	snaps retiredSnapshots // snapshots calls still use, for the gate (gate.go)

	// events fans operator events (audit, webhooks, …) out to their
	// outputs; extraSink is Options.Events, kept across output changes.
	events    events.Mux
	extraSink events.Sink
	// ops are the CDR file, webhooks and HEP export (outputs.go), open
	// between Start and Close.
	ops atomic.Pointer[outputs]
	out outputState // the audit log and the keyring (audit.go)

	runtime runtimeState // admin API state: drain, disabled trunks, CPS meters (adminstate.go)
	version string

	// clock, when set (tests), is the time of day of outbound routes.
	clock atomic.Pointer[func() time.Time]
	// outreg runs the outbound registrations, dns the resolver of
	// host-name targets (outreg.go, resolve.go).
	outreg outregs
	dns    *resolver
	dnsRun atomic.Pointer[loopHandle]    // the resolver's loop, between Start and Close
	raw    atomic.Pointer[policy.Policy] // the policy in force as the file gave it (host names unresolved)
}

// snapshot is everything derived from one policy. Calls keep the snapshot
// they started with; a reload swaps in a new one atomically.
type snapshot struct {
	pol    *policy.Policy
	pools  map[string]*pool
	trunks *acl.TrunkTable
	// backends are the pool targets' addresses: never charged a failure
	// (trust.go).
	backends map[netip.Addr]bool
	// targetOn holds each pool target's address with its pool's realm:
	// there (and only there) it has the trunks' packet budget.
	targetOn map[realmAddr]bool
	headers  *topology.HeaderFilter
	limits   policy.Calls
	tls      tlsTables
	gates    map[string]*realmGate // by realm: the gate for unknown sources (gate.go)
	rules    *hdrRules             // [[header_rule]] compiled (headerrules.go); nil: none
}

// realmAddr is an address on a realm.
type realmAddr struct {
	realm string
	addr  netip.Addr
}

// buildSnapshot derives a snapshot from p. Pool targets come from ts (a
// target kept across a reload keeps its health state), which it updates.
func (s *SBC) buildSnapshot(p *policy.Policy, ts *targetSet) (*snapshot, error) {
	entries := make([]acl.TrunkEntry, 0, len(p.Trunks))
	for _, t := range p.Trunks {
		entries = append(entries, acl.TrunkEntry{Name: t.Name, Prefixes: t.Prefixes})
	}
	trunks, err := acl.NewTrunkTable(entries)
	if err != nil {
		return nil, err
	}
	tt, err := s.buildTLS(p)
	if err != nil {
		return nil, err
	}
	rules, err := compileHeaderRules(p, s.metrics)
	if err != nil {
		return nil, err
	}
	backends := map[netip.Addr]bool{}
	targetOn := map[realmAddr]bool{}
	for _, pl := range p.Pools {
		for _, t := range pl.Targets {
			backends[t.Addr.Addr().Unmap()] = true
			targetOn[realmAddr{pl.Realm, t.Addr.Addr().Unmap()}] = true
		}
	}
	return &snapshot{
		backends: backends,
		targetOn: targetOn,
		pol:      p,
		pools:    buildPools(p, ts),
		trunks:   trunks,
		headers:  topology.NewHeaderFilter(p.Headers.Allow),
		limits:   p.Calls,
		tls:      tt,
		gates:    buildGates(p),
		rules:    rules,
	}, nil
}

// New builds an SBC from a validated policy. It opens no socket: call Start.
func New(p *policy.Policy, opt Options) (*SBC, error) {
	if p == nil {
		return nil, errors.New("sbc: nil policy")
	}
	s := &SBC{log: opt.Logger, metrics: newMetrics(), realms: map[string]*endpoint{}}
	s.extraSink = opt.Events
	s.version = opt.Version
	s.manageGC = opt.ManageGC
	s.udpReaders = opt.UDPReaders
	if s.udpReaders <= 0 {
		s.udpReaders = defaultUDPReaders(runtime.GOMAXPROCS(0))
	}
	s.runtime.setApplied(p)
	if s.extraSink != nil {
		s.events.Set(s.extraSink)
	}
	s.reload.level = opt.LogLevel
	if s.reload.level == nil {
		s.reload.level = new(slog.LevelVar)
	}
	s.reload.level.Set(policy.SlogLevel(p.Server.LogLevel))
	if s.log == nil {
		s.log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: s.reload.level}))
	}
	// No value of a line longer than maxLogValue bytes (logging.go).
	s.log = slog.New(newBoundHandler(s.log.Handler()))
	s.calls = newCallTable()
	s.tls = newTLSFiles(s.log, s.metrics)
	s.sipLog = slog.New(&sipgoLogHandler{next: s.log.Handler(), onParse: func(err string) {
		s.act(nil, peer{}, nil, nil, silent(stageParse, reasonMalformed).with("error", err))
	}})
	// sipgo creates some loggers from its global default (set once, in
	// init, to avoid racing with its readers); point it at this SBC.
	sipgoTarget.Store(&handlerBox{s.sipLog.Handler()})
	// Host-name targets: the policy in force has their addresses
	// (resolve.go).
	s.dns = newResolver(s.log, s.metrics)
	raw := p
	p = s.expand(p)
	s.raw.Store(raw)
	s.dns.commit(raw.DNS, raw.Hosts())
	snap, err := s.buildSnapshot(p, &s.targets)
	if err != nil {
		return nil, err
	}
	s.state.Store(snap)
	keys, err := loadKeyring(p)
	if err != nil {
		return nil, err
	}
	if err := openSecrets(p, keys); err != nil {
		return nil, err
	}
	s.out.keys.Store(keys)
	if s.def, err = newDefence(p, s.log); err != nil {
		return nil, err
	}
	// After the defence: it checks that state_dir is writable and says so.
	regKey, err := loadRegKey(p.Server.StateDir)
	if err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	s.regs = newRegCache(regKey)
	s.regs.count = func(realm string, d float64) { s.metrics.Registrations.WithLabelValues(realm).Add(d) }
	if s.media, err = newMediaPlane(p, sealer(keys)); err != nil {
		return nil, err
	}
	s.resealDTLS(p.Server.StateDir, keys) // opened with a previous key: re-sealed under the current one
	s.metrics.Registry.MustRegister(s.media)
	s.metrics.Registry.MustRegister(outputsCollector{stats: func() outputStats { return s.ops.Load().stats() }})
	if p.HEP.Enabled {
		enableSIPTrace()
	}
	for _, r := range p.Realms {
		ep, err := s.newEndpoint(r, p)
		if err != nil {
			return nil, fmt.Errorf("realm %s: %w", r.Name, err)
		}
		s.realms[r.Name] = ep
	}
	// Last: nothing after it can fail and leave its outputs open.
	al, err := s.openAudit(p)
	if err != nil {
		return nil, err
	}
	s.setAudit(al)
	s.emit(events.Event{Kind: events.ConfigChanged, Reason: reasonStart, Detail: map[string]string{"policy": p.Source}})
	return s, nil
}

// emit reports an operator event to the outputs (never blocks for long:
// outputs queue).
func (s *SBC) emit(e events.Event) { s.events.Emit(e) }

// Metrics returns the SBC's Prometheus instruments.
func (s *SBC) Metrics() *Metrics { return s.metrics }

// Policy returns the policy in force.
func (s *SBC) Policy() *policy.Policy { return s.state.Load().pol }

// Start opens every listener (failing as a whole if one cannot be opened)
// and starts serving, health checks and the admin listener.
func (s *SBC) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("sbc: already started")
	}
	p := s.state.Load().pol
	if err := s.media.openKernel(p); err != nil {
		return err
	}
	s.applyGC(p)
	for _, ep := range s.realms {
		if err := ep.listen(p); err != nil {
			for _, o := range s.realms {
				o.closeSockets()
			}
			s.media.closeKernel()
			return err
		}
	}
	out, err := s.openOutputs(p)
	if err != nil {
		for _, o := range s.realms {
			o.closeSockets()
		}
		s.media.closeKernel()
		return err
	}
	s.ops.Store(out)
	s.out.mu.Lock()
	s.setSinks() // the webhooks join the Mux
	s.out.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	for _, ep := range s.realms {
		ep.serve(ctx)
	}
	s.fast = s.startFastPath(ctx, p)
	s.metrics.Registry.MustRegister(blocklistCollectors(s.def.blocklist)...)
	s.wg.Add(8)
	go func() { defer s.wg.Done(); s.regLoop(ctx) }()
	s.startResolveLoop(ctx)
	s.outreg.start(ctx, s, p)
	// The blocklist feeds are subscribed before their goroutines run: a
	// block made right after Start is audited and closes connections too.
	blockFeed, _ := s.def.blocklist.Subscribe(auditBlockBuffer)
	connFeed, _ := s.def.blocklist.Subscribe(0)
	go func() { defer s.wg.Done(); s.auditBlocks(ctx, blockFeed) }()
	go func() { defer s.wg.Done(); s.snapshotLoop(ctx) }()
	go func() { defer s.wg.Done(); s.watchBlocks(ctx, connFeed) }()
	go func() { defer s.wg.Done(); s.healthLoop(ctx) }()
	go func() { defer s.wg.Done(); s.trunkHealthLoop(ctx) }()
	go func() { defer s.wg.Done(); s.tlsLoop(ctx) }()
	go func() { defer s.wg.Done(); s.def.blocklist.Run(ctx) }()
	if p.Admin.Listen != "" {
		a, err := s.startAdmin(p.Admin)
		if err != nil {
			cancel()
			for _, ep := range s.realms {
				ep.close()
			}
			_ = s.ops.Load().close()
			s.out.mu.Lock()
			s.ops.Store(nil)
			s.setSinks()
			s.out.mu.Unlock()
			s.media.closeKernel()
			return err
		}
		s.admin = a
	}
	s.started = true
	s.log.Info("sbc started", "policy", p.Source, "realms", len(s.realms))
	return nil
}

// Close ends every call (BYE to both legs), stops listeners and waits for
// the SBC's goroutines.
func (s *SBC) Close() error {
	// First, without s.mu: the resolver's loop may be applying new
	// addresses (a reload, which takes s.mu).
	s.stopResolveLoop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.closeAudit()
		return nil
	}
	s.started = false
	// Calls in progress get a BYE on both legs (a CANCEL and a 503 when
	// not answered yet); the answers are awaited for a bounded time only.
	s.calls.each(func(c *call) { c.post(event{kind: evTerminate, reason: resultShutdown}) })
	for deadline := time.Now().Add(3 * time.Second); s.hangups.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	s.runtime.stopDrain()
	// Outbound registrations unregister while the listeners are open
	// (bounded).
	s.outreg.stopAll()
	s.cancel()
	if s.admin != nil {
		s.admin.close()
	}
	for _, ep := range s.realms {
		ep.close()
	}
	s.wg.Wait()
	s.outreg.wg.Wait()
	if err := s.ops.Load().close(); err != nil {
		s.log.Error("operator outputs: close", "error", err.Error())
	}
	s.out.mu.Lock()
	s.ops.Store(nil)
	s.setSinks() // the webhooks leave the Mux
	s.out.mu.Unlock()
	s.fast.close()
	s.media.closeKernel()
	s.media.closePools()
	if err := s.def.blocklist.Close(); err != nil {
		s.log.Error("blocklist: last save failed", "error", err.Error())
	}
	s.closeAudit()
	return nil
}

// ListenAddr returns the bound address of a realm's listener (useful when
// the policy binds port 0).
func (s *SBC) ListenAddr(realm, transport string) (netip.AddrPort, bool) {
	ep := s.realms[realm]
	if ep == nil {
		return netip.AddrPort{}, false
	}
	a, ok := ep.laddr[transport]
	return a, ok
}

// AdminAddr returns the admin listener's bound address, if any.
func (s *SBC) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.ln.Addr()
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
