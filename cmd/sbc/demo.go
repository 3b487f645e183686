package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

// demoPolicy is the example policy's shape on free loopback ports, with
// the demo backend as the only target.
const demoPolicy = `
[server]
user_agent = "sbc-demo"
[admin]
listen = ""
[[realm]]
name = "external"
  [[realm.listener]]
  transport = "udp"
  bind = "127.0.0.1:0"
[[realm]]
name = "internal"
  [[realm.listener]]
  transport = "udp"
  bind = "127.0.0.1:0"
[[trunk]]
name = "local"
realm = "external"
sources = ["127.0.0.1/32"]
[[pool]]
name = "pbx"
realm = "internal"
  [[pool.target]]
  address = %q
[routing]
default_pool = "pbx"
[calls]
ring_timeout = "5s"
`

type demoRow struct {
	scenario, from, got, want string
}

// dropCounts reads sbc_dropped_total, keyed "stage/reason".
func dropCounts(m *sbc.Metrics) map[string]float64 {
	out := map[string]float64{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "sbc_dropped_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var stage, reason string
			for _, lp := range mt.GetLabel() {
				switch lp.GetName() {
				case "stage":
					stage = lp.GetValue()
				case "reason":
					reason = lp.GetValue()
				}
			}
			out[stage+"/"+reason] = mt.GetCounter().GetValue()
		}
	}
	return out
}

// dropWatch passes log records on and remembers the SBC's "dropped" lines
// (stage, reason, source): the demo reports why each dropped request was
// dropped, by its source address, whatever else is dropped meanwhile
// (retransmissions of an earlier caller).
type dropWatch struct {
	next slog.Handler
	mu   *sync.Mutex
	by   map[string][]string // source "ip:port" → "stage/reason", first first
}

func newDropWatch(next slog.Handler) *dropWatch {
	return &dropWatch{next: next, mu: new(sync.Mutex), by: map[string][]string{}}
}

func (d *dropWatch) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || d.next.Enabled(ctx, l)
}

func (d *dropWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "dropped" {
		var stage, reason, src string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "stage":
				stage = a.Value.String()
			case "reason":
				reason = a.Value.String()
			case "source":
				src = a.Value.String()
			}
			return true
		})
		d.mu.Lock()
		if why := stage + "/" + reason; !slices.Contains(d.by[src], why) {
			d.by[src] = append(d.by[src], why)
		}
		d.mu.Unlock()
	}
	if !d.next.Enabled(ctx, r.Level) {
		return nil
	}
	return d.next.Handle(ctx, r)
}

func (d *dropWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return &dropWatch{next: d.next.WithAttrs(as), mu: d.mu, by: d.by}
}

func (d *dropWatch) WithGroup(name string) slog.Handler {
	return &dropWatch{next: d.next.WithGroup(name), mu: d.mu, by: d.by}
}

// reasons returns the drop reasons logged for a source, in order.
func (d *dropWatch) reasons(src string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.by[src])
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	verbose := fs.Bool("v", false, "print the SBC's log lines")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var logOut io.Writer = io.Discard
	if *verbose {
		logOut = stderr
	}
	drops := newDropWatch(slog.NewJSONHandler(logOut, nil))
	log := slog.New(drops)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	backend, err := sipua.NewBackend(sipua.BackendOptions{
		UDP: "127.0.0.1:0", UserAgent: "DemoPBX/1.0", Logger: log,
		Answer: func(r *sip.Request) sipua.Plan {
			switch r.Recipient.User {
			case "486":
				return sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, Final: 486}
			case "ring":
				return sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}, Delay: 30 * time.Second}
			}
			return sipua.Plan{Provisional: []sipua.Provisional{{Code: 180}}}
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "demo: backend:", err)
		return 1
	}
	defer backend.Close()
	p, err := policy.Parse("<demo>", []byte(fmt.Sprintf(demoPolicy, backend.Addr())))
	if err != nil {
		fmt.Fprintln(stderr, "demo: policy:", err)
		return 1
	}
	s, err := sbc.New(p, sbc.Options{Logger: log})
	if err == nil {
		err = s.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(stderr, "demo: sbc:", err)
		return 1
	}
	defer s.Close()
	ext, _ := s.ListenAddr("external", "udp")
	fmt.Fprintf(stdout, "sbc listening on %s (external) → backend %s\n\n", ext, backend.Addr())

	caller, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.1:0", UserAgent: "CarrierSwitch/2.1", Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "demo: caller:", err)
		return 1
	}
	defer caller.Close()
	stranger, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.66:0", UserAgent: "friendly-scanner", Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "demo: stranger:", err)
		return 1
	}
	defer stranger.Close()
	unknown, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.67:0", UserAgent: "CarrierSwitch/2.1", Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "demo: unknown caller:", err)
		return 1
	}
	defer unknown.Close()
	scanner, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.1:0", UserAgent: "friendly-scanner", Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "demo: scanner:", err)
		return 1
	}
	defer scanner.Close()

	var rows []demoRow
	var callIDs []string
	place := func(c *sipua.Caller, scenario, user, want string, during func(*sipua.Call) string) {
		row := demoRow{scenario: scenario, from: c.Addr(), want: want}
		call, err := c.Dial(ctx, ext.String(), sipua.DialOptions{User: user, SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
		if err != nil {
			row.got = "error: " + err.Error()
			rows = append(rows, row)
			return
		}
		callIDs = append(callIDs, call.CallID())
		row.got = during(call)
		rows = append(rows, row)
	}
	place(caller, "answered, hold/resume, caller hangs up", "1000", "200 → BYE", func(call *sipua.Call) string {
		res, err := call.WaitFinal(ctx)
		if err != nil {
			return err.Error()
		}
		if res.StatusCode != 200 {
			return fmt.Sprint(res.StatusCode)
		}
		got := "200"
		for _, dir := range []string{"sendonly", "sendrecv"} {
			if r, err := call.ReInvite(ctx, sipua.SDP("192.0.2.10", 40000, 2, dir)); err != nil || r.StatusCode != 200 {
				return got + ", re-INVITE failed"
			}
		}
		if call.Bye(ctx) != nil {
			return got + ", BYE failed"
		}
		return got + " → BYE"
	})
	place(caller, "callee busy", "486", "486", func(call *sipua.Call) string {
		res, err := call.WaitFinal(ctx)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(res.StatusCode)
	})
	place(caller, "caller cancels while ringing", "ring", "487", func(call *sipua.Call) string {
		if _, err := call.WaitStatus(ctx, 180); err != nil {
			return "no 180"
		}
		if err := call.Cancel(ctx); err != nil {
			return err.Error()
		}
		res, err := call.WaitFinal(ctx)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(res.StatusCode)
	})
	// A dropped request gets no answer; why it was dropped is in the
	// SBC's "dropped" log line for its source (stage and reason, the
	// labels of sbc_dropped_total).
	dropped := func(c *sipua.Caller) func(*sipua.Call) string {
		return func(call *sipua.Call) string {
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			defer wcancel()
			if res, err := call.WaitFinal(wctx); err == nil {
				return fmt.Sprint(res.StatusCode)
			}
			why := drops.reasons(c.Addr())
			if len(why) == 0 {
				return "no answer (no drop logged)"
			}
			return "dropped: " + strings.Join(why, ", ")
		}
	}
	// Sources that are no trunk die before the SIP parser (the gate):
	// nothing of them is read, a scanner's User-Agent included.
	place(stranger, "scanner User-Agent, not a trunk", "1000", "dropped: filter/unknown_source", dropped(stranger))
	place(unknown, "unknown source (not a trunk)", "1000", "dropped: filter/unknown_source", dropped(unknown))
	// A scanner behind a trunk's address is told by its User-Agent.
	place(scanner, "scanner User-Agent from a trunk address", "1000", "dropped: classify/scanner_ua", dropped(scanner))

	// What the backend saw of the callers: their Call-IDs, addresses and
	// user agents must be nowhere in what it received.
	var leaks []string
	for _, m := range backend.Received() {
		head := m.Head()
		for _, secret := range append([]string{caller.Addr(), stranger.Addr(), unknown.Addr(), "127.0.0.66", "127.0.0.67", "CarrierSwitch", "friendly-scanner"}, callIDs...) {
			if strings.Contains(head, secret) {
				leaks = append(leaks, fmt.Sprintf("%q in %s", secret, m.StartLine))
			}
		}
	}
	saw := "nothing"
	if len(leaks) > 0 {
		saw = strings.Join(leaks, "; ")
	}
	ok := true
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tscenario\tfrom\tresult\texpected")
	for i, r := range rows {
		mark := ""
		if r.got != r.want {
			mark = "  ✗"
			ok = false
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s%s\n", i+1, r.scenario, r.from, r.got, r.want, mark)
	}
	tw.Flush()
	m := s.Metrics()
	fmt.Fprintf(stdout, "\nbackend received %d messages; of the callers it saw: %s\n", len(backend.Received()), saw)
	fmt.Fprintf(stdout, "sbc_calls_total: answered=%v busy=%v cancelled=%v\n",
		testutil.ToFloat64(m.Calls.WithLabelValues("answered")), testutil.ToFloat64(m.Calls.WithLabelValues("busy")),
		testutil.ToFloat64(m.Calls.WithLabelValues("cancelled")))
	var dropLine []string
	counts := dropCounts(m)
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		dropLine = append(dropLine, fmt.Sprintf("%s=%v", k, counts[k]))
	}
	if len(dropLine) == 0 {
		dropLine = []string{"none"}
	}
	fmt.Fprintf(stdout, "sbc_dropped_total{stage/reason}: %s\n", strings.Join(dropLine, " "))
	if !ok || len(leaks) > 0 {
		fmt.Fprintln(stdout, "\ndemo: something did not go as expected")
		return 1
	}
	return 0
}
