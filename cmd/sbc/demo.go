package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
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
	log := slog.New(slog.NewJSONHandler(logOut, nil))
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
	place(stranger, "unknown source (not a trunk)", "1000", "no answer (dropped)", func(call *sipua.Call) string {
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		defer wcancel()
		if res, err := call.WaitFinal(wctx); err == nil {
			return fmt.Sprint(res.StatusCode)
		}
		return "no answer (dropped)"
	})

	// What the backend saw of the callers: their Call-IDs, addresses and
	// user agents must be nowhere in what it received.
	var leaks []string
	for _, m := range backend.Received() {
		head := m.Head()
		for _, secret := range append([]string{caller.Addr(), stranger.Addr(), "127.0.0.66", "CarrierSwitch", "friendly-scanner"}, callIDs...) {
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
	fmt.Fprintf(stdout, "sbc_calls_total: answered=%v busy=%v cancelled=%v; sbc_dropped_total{classify,unknown_source}=%v\n",
		testutil.ToFloat64(m.Calls.WithLabelValues("answered")), testutil.ToFloat64(m.Calls.WithLabelValues("busy")),
		testutil.ToFloat64(m.Calls.WithLabelValues("cancelled")), testutil.ToFloat64(m.Dropped.WithLabelValues("classify", "unknown_source")))
	if !ok || len(leaks) > 0 {
		fmt.Fprintln(stdout, "\ndemo: something did not go as expected")
		return 1
	}
	return 0
}
