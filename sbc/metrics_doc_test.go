package sbc

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/acl/nft"
	"github.com/sbc-project/sbc/ebpf"
	"github.com/sbc-project/sbc/srtp"
	"github.com/sbc-project/sbc/webhook"
)

// docs/METRICS.md against the code: every family the SBC registers, its
// type, help and labels, and the closed set of values of every label.

const metricsDoc = "../docs/METRICS.md"

// docFamily is one family as docs/METRICS.md describes it.
type docFamily struct {
	line      int
	typ, help string
	labels    []string        // as listed
	policy    map[string]bool // labels whose values come from the policy
	// values: for each set of labels a table gives together (names
	// sorted, joined by ","), the tuples of values (joined by "/").
	values map[string]map[string]bool
}

var backquoted = regexp.MustCompile("`([^`]+)`")

// parseMetricsDoc reads the family sections of docs/METRICS.md (see the
// paragraph on its shape there).
func parseMetricsDoc(t *testing.T) map[string]*docFamily {
	t.Helper()
	f, err := os.Open(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]*docFamily{}
	var cur *docFamily
	var table [][]string // rows of the table being read, header first
	var tableLine int
	flush := func() {
		if cur != nil && len(table) > 2 {
			addTable(t, cur, table, tableLine)
		}
		table = nil
	}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !strings.HasPrefix(line, "|") {
			flush()
		}
		switch {
		case strings.HasPrefix(line, "## "):
			cur = nil
			name := strings.Trim(strings.TrimSpace(line[3:]), "`")
			if !strings.HasPrefix(name, "sbc_") {
				continue
			}
			if out[name] != nil {
				t.Errorf("%s:%d: %s documented twice", metricsDoc, n, name)
			}
			cur = &docFamily{line: n, policy: map[string]bool{}, values: map[string]map[string]bool{}}
			out[name] = cur
		case cur == nil:
		case strings.HasPrefix(line, "- type: "):
			cur.typ = strings.TrimSpace(strings.TrimPrefix(line, "- type: "))
		case strings.HasPrefix(line, "- help: "):
			cur.help = strings.TrimSpace(strings.TrimPrefix(line, "- help: "))
		case strings.HasPrefix(line, "- labels: "):
			v := strings.TrimSpace(strings.TrimPrefix(line, "- labels: "))
			if v == "none" {
				cur.labels = []string{}
				continue
			}
			for _, l := range strings.Split(v, ",") {
				l = strings.TrimSpace(l)
				if name, ok := strings.CutSuffix(l, " (policy)"); ok {
					l = name
					cur.policy[l] = true
				}
				cur.labels = append(cur.labels, l)
			}
		case strings.HasPrefix(line, "|"):
			if table == nil {
				tableLine = n
			}
			cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			table = append(table, cells)
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// addTable records the label values of one table: the columns headed by
// a label of the family; each row stands for every combination of the
// backquoted words of its label cells.
func addTable(t *testing.T, fam *docFamily, table [][]string, line int) {
	type col struct {
		label string
		i     int
	}
	var cols []col
	for i, h := range table[0] {
		if slices.Contains(fam.labels, h) {
			cols = append(cols, col{h, i})
		}
	}
	if len(cols) == 0 {
		return
	}
	slices.SortFunc(cols, func(a, b col) int { return strings.Compare(a.label, b.label) })
	var names []string
	for _, c := range cols {
		names = append(names, c.label)
	}
	key := strings.Join(names, ",")
	if fam.values[key] == nil {
		fam.values[key] = map[string]bool{}
	}
	for r, row := range table[2:] {
		tuples := []string{""}
		for _, c := range cols {
			if c.i >= len(row) {
				t.Errorf("%s:%d: row without a %s cell", metricsDoc, line+2+r, c.label)
				tuples = nil
				break
			}
			var words []string
			for _, m := range backquoted.FindAllStringSubmatch(row[c.i], -1) {
				words = append(words, m[1])
			}
			if len(words) == 0 {
				t.Errorf("%s:%d: no `value` in the %s cell", metricsDoc, line+2+r, c.label)
			}
			var next []string
			for _, tu := range tuples {
				for _, w := range words {
					if tu == "" {
						next = append(next, w)
					} else {
						next = append(next, tu+"/"+w)
					}
				}
			}
			tuples = next
		}
		for _, tu := range tuples {
			if fam.values[key][tu] {
				t.Errorf("%s:%d: %s = %s listed twice", metricsDoc, line+2+r, key, tu)
			}
			fam.values[key][tu] = true
		}
	}
}

// codeLabelValues is what the code can put in each label: the values, by
// family and set of labels given together (as in docFamily.values), and
// the labels whose values are names from the policy. It is driven by the
// lists the code itself uses (reasons.go, methodLabels, classLabel, …).
func codeLabelValues() (values map[string]map[string]map[string]bool, policy map[string][]string) {
	values = map[string]map[string]map[string]bool{}
	add := func(family, key string, tuples ...string) {
		if values[family] == nil {
			values[family] = map[string]map[string]bool{}
		}
		if values[family][key] == nil {
			values[family][key] = map[string]bool{}
		}
		for _, tu := range tuples {
			values[family][key][tu] = true
		}
	}
	add("sbc_calls_total", "result", callResults...)
	add("sbc_requests_total", "method", methodLabels[:]...)
	for code := 100; code < 700; code++ {
		add("sbc_responses_total", "class", classLabel(code))
	}
	for _, d := range dropReasons {
		for _, r := range d.reasons {
			add("sbc_dropped_total", "reason,stage", string(r)+"/"+string(d.stage))
		}
	}
	add("sbc_reload_total", "result", reloadResults...)
	for _, f := range blockFailures {
		add("sbc_blocks_total", "origin,reason", blockOriginAuto+"/"+string(f), blockOriginObserve+"/"+string(f),
			blockOriginAggregate+"/"+string(f))
	}
	add("sbc_trunk_calls_total", "result", callResults...)
	add("sbc_outbound_calls_total", "result", callResults...)
	add("sbc_registers_total", "result", regResults...)
	add("sbc_user_calls_total", "result", userCallResults()...)
	add("sbc_carrier_auth_total", "result", authResults...)
	add("sbc_transfers_total", "mode,result", xferModeResults...)
	add("sbc_outbound_registration_failures_total", "reason", regFailReasons...)
	add("sbc_dns_resolutions_total", "result", dnsResults...)
	for _, f := range trunkFailures {
		add("sbc_trunk_failures_total", "failure", string(f))
	}
	add("sbc_register_guesses_total", "proof", guessProofs...)
	add("sbc_blocks_total", "origin,reason", blockOriginManual+"/"+blockReasonManual)
	add("sbc_fastpath_info", "path", fastPaths...)
	for _, f := range []string{"sbc_fastpath_missing_entries", "sbc_fastpath_overflows_total", "sbc_fastpath_syncs_total"} {
		add(f, "path", mirrorPaths...)
	}
	add("sbc_blocklist_state_writes_total", "result", stateWriteResults...)
	for _, a := range xdpActions {
		add("sbc_xdp_packets_total", "action", a.action)
	}
	for _, tr := range []string{"tls", "wss"} {
		add("sbc_tls_handshakes_total", "result,side,transport", tlsOK+"/server/"+tr)
		for _, r := range tlsReasons {
			add("sbc_tls_handshakes_total", "result,side,transport", string(r)+"/server/"+tr)
		}
	}
	for _, r := range tlsClientResults {
		add("sbc_tls_handshakes_total", "result,side,transport", r+"/client/tls")
	}
	add("sbc_tls_file_reloads_total", "result", tlsFileResults...)
	add("sbc_connections_open", "transport", streamTransports...)
	for r := srtp.DropReason(0); r < srtp.NumDropReasons; r++ {
		add("sbc_media_dropped_packets_total", "reason", r.String())
	}
	add("sbc_media_ports", "state", mediaPortStates...)
	for _, r := range callResults {
		for _, by := range hangupBy {
			add("sbc_calls_ended_total", "by,reason", by+"/"+r)
		}
	}
	add("sbc_cdr_records_total", "result", cdrResults...)
	add("sbc_hep_packets_total", "result", hepResults...)
	add("sbc_webhook_events_total", "result", webhookResults...)
	add("sbc_audit_records_total", "output", auditOutputs...)
	for _, o := range auditOutputs {
		for _, r := range auditDropReasons {
			add("sbc_audit_dropped_total", "output,reason", o+"/"+r)
		}
	}
	add("sbc_admin_requests_total", "result", adminResults...)
	add("sbc_admin_auth_failures_total", "reason", adminAuthReasons...)
	add("sbc_media_dtls_handshakes_total", "result", dtlsResults[:]...)
	add("sbc_media_timeouts_total", "reason", mediaEndings[:]...)
	add("sbc_header_rule_skips_total", "reason", hdrSkipReasons...)
	policy = map[string][]string{
		"sbc_tls_handshakes_total":                 {"realm"},
		"sbc_tls_certificate_expiry_days":          {"file"},
		"sbc_connections_open":                     {"realm"},
		"sbc_udp_peers":                            {"realm"},
		"sbc_registrations":                        {"realm"},
		"sbc_udp_peer_resets_total":                {"realm"},
		"sbc_media_packets_total":                  {"realm"},
		"sbc_media_bytes_total":                    {"realm"},
		"sbc_media_forwarded_packets_total":        {"realm"},
		"sbc_media_offloaded_packets_total":        {"realm"},
		"sbc_media_dropped_packets_total":          {"realm"},
		"sbc_media_streams_active":                 {"realm"},
		"sbc_media_ports":                          {"realm"},
		"sbc_media_ports_exhausted_total":          {"realm"},
		"sbc_media_dtls_handshakes_total":          {"realm"},
		"sbc_media_timeouts_total":                 {"realm"},
		"sbc_requests_total":                       {"realm"},
		"sbc_webhook_events_total":                 {"webhook"},
		"sbc_webhook_retries_total":                {"webhook"},
		"sbc_responses_total":                      {"realm"},
		"sbc_backend_target_up":                    {"pool", "target"},
		"sbc_backend_failovers_total":              {"pool"},
		"sbc_trunk_calls_total":                    {"trunk"},
		"sbc_carrier_auth_total":                   {"pool"},
		"sbc_outbound_registration_up":             {"pool", "target"},
		"sbc_outbound_registration_failures_total": {"pool"},
		"sbc_trunk_failures_total":                 {"trunk"},
		"sbc_header_rule_matches_total":            {"rule"},
		"sbc_header_rule_skips_total":              {"rule"},
	}
	return values, policy
}

var variableLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)

// sbcRegistry holds every family the SBC can register: newMetrics',
// those registered at Start and those of the kernel fast paths. Each
// vector has a child, so that Gather shows it.
func sbcRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	m := newMetrics()
	bl := acl.NewBlocklist(acl.Options{})
	t.Cleanup(func() { bl.Close() })
	m.Registry.MustRegister(blocklistCollectors(bl)...)
	for _, path := range mirrorPaths {
		m.Registry.MustRegister(mirrorCollectors(path, func() acl.MirrorStats { return acl.MirrorStats{} })...)
	}
	m.Registry.MustRegister(xdpCollectors(func() (ebpf.Counters, error) { return ebpf.Counters{}, nil })...)
	m.Registry.MustRegister(nftCollectors(func() (nft.Counters, error) { return nft.Counters{}, nil })...)
	pp, err := srtp.NewPortPool(srtp.PortPoolConfig{IP: netip.MustParseAddr("127.0.0.1"), Min: 30000, Max: 30001})
	if err != nil {
		t.Fatal(err)
	}
	m.Registry.MustRegister(&mediaPlane{pools: map[string]*srtp.PortPool{"x": pp}})
	m.Registry.MustRegister(outputsCollector{stats: func() outputStats {
		return outputStats{hooks: map[string]webhook.Stats{"x": {}}}
	}})
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if _, reg := c.(*prometheus.Registry); !ok || reg {
			continue
		}
		ch := make(chan *prometheus.Desc, 1) // a metric or vector has one Desc
		c.Describe(ch)
		close(ch)
		d := <-ch
		sub := variableLabels.FindStringSubmatch(d.String())
		if sub == nil || sub[1] == "" {
			continue
		}
		dummies := make([]string, len(strings.Split(sub[1], ",")))
		for j := range dummies {
			dummies[j] = "x"
		}
		switch c := c.(type) {
		case *prometheus.CounterVec:
			c.WithLabelValues(dummies...)
		case *prometheus.GaugeVec:
			c.WithLabelValues(dummies...)
		default:
			t.Fatalf("Metrics.%s: a %T with labels; teach sbcRegistry to give it a child", v.Type().Field(i).Name, c)
		}
	}
	return m.Registry
}

func TestMetricsDocumented(t *testing.T) {
	doc := parseMetricsDoc(t)
	mfs, err := sbcRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	want, policy := codeLabelValues()
	registered := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		registered[name] = true
		d := doc[name]
		if d == nil {
			t.Errorf("%s (%s, %q) is registered but not in %s", name, mf.GetType(), mf.GetHelp(), metricsDoc)
			continue
		}
		at := fmt.Sprintf("%s:%d: %s", metricsDoc, d.line, name)
		if typ := strings.ToLower(mf.GetType().String()); d.typ != typ {
			t.Errorf("%s: type %q, the code's is %q", at, d.typ, typ)
		}
		if d.help != mf.GetHelp() {
			t.Errorf("%s: help\n\t%q\nthe code's is\n\t%q", at, d.help, mf.GetHelp())
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		codeLabels := slices.Sorted(maps.Keys(labels))
		docLabels := slices.Sorted(slices.Values(d.labels))
		if d.labels == nil {
			t.Errorf("%s: no \"- labels:\" line", at)
		} else if !slices.Equal(codeLabels, docLabels) {
			t.Errorf("%s: labels %v, the code's are %v", at, docLabels, codeLabels)
		}

		// Values: policy labels, and a value set for every other label.
		pol := slices.Sorted(slices.Values(policy[name]))
		if got := slices.Sorted(maps.Keys(d.policy)); !slices.Equal(got, pol) {
			t.Errorf("%s: labels marked (policy) %v, want %v", at, got, pol)
		}
		covered := map[string]bool{}
		for _, l := range pol {
			covered[l] = true
		}
		for key := range want[name] {
			for _, l := range strings.Split(key, ",") {
				covered[l] = true
			}
		}
		for _, l := range codeLabels {
			if !covered[l] {
				t.Errorf("%s: label %s has no known set of values: add the code's list to codeLabelValues", at, l)
			}
		}
		for _, key := range slices.Sorted(maps.Keys(want[name])) {
			got := d.values[key]
			if got == nil {
				t.Errorf("%s: no table of %s (the code produces %d values)", at, key, len(want[name][key]))
				continue
			}
			for _, v := range slices.Sorted(maps.Keys(want[name][key])) {
				if !got[v] {
					t.Errorf("%s: %s = %s is produced by the code but not documented", at, key, v)
				}
			}
			for _, v := range slices.Sorted(maps.Keys(got)) {
				if !want[name][key][v] {
					t.Errorf("%s: %s = %s is documented but the code cannot produce it", at, key, v)
				}
			}
		}
		for key := range d.values {
			if want[name][key] == nil {
				t.Errorf("%s: a table of %s, which the code has no list for", at, key)
			}
		}
	}
	for name, d := range doc {
		if !registered[name] {
			t.Errorf("%s:%d: %s is documented but the SBC does not register it", metricsDoc, d.line, name)
		}
	}

	// A family registered anywhere in the repository must be one that
	// sbcRegistry assembles (or this test checks nothing about it).
	for _, name := range prometheusNames(t) {
		if !registered[name.value] {
			t.Errorf("%s: metric %s is not in sbcRegistry: register it there (and document it)", name.pos, name.value)
		}
	}
}

type posString struct{ pos, value string }

// prometheusNames finds the Name of every prometheus.*Opts literal in the
// repository's non-test Go files.
func prometheusNames(t *testing.T) []posString {
	t.Helper()
	var out []posString
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n != ".." && (strings.HasPrefix(n, ".") || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(src), "client_golang/prometheus") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := cl.Type.(*ast.SelectorExpr)
			if !ok || exprString(sel.X) != "prometheus" || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			for _, el := range cl.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok || exprString(kv.Key) != "Name" {
					continue
				}
				lit, ok := kv.Value.(*ast.BasicLit)
				if !ok {
					t.Errorf("%s: a metric name that is not a literal", fset.Position(kv.Pos()))
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				out = append(out, posString{fset.Position(kv.Pos()).String(), v})
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("found no prometheus.*Opts in the repository: the scan is broken")
	}
	return out
}
