package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// UDPStats are the system-wide UDP counters of /proc/net/snmp.
type UDPStats struct {
	InDatagrams  uint64
	NoPorts      uint64 // datagrams to a port nobody listens on
	InErrors     uint64
	RcvbufErrors uint64 // datagrams dropped because a socket's receive buffer was full
	SndbufErrors uint64
}

// Sub returns s - o, counter by counter.
func (s UDPStats) Sub(o UDPStats) UDPStats {
	return UDPStats{
		InDatagrams:  s.InDatagrams - o.InDatagrams,
		NoPorts:      s.NoPorts - o.NoPorts,
		InErrors:     s.InErrors - o.InErrors,
		RcvbufErrors: s.RcvbufErrors - o.RcvbufErrors,
		SndbufErrors: s.SndbufErrors - o.SndbufErrors,
	}
}

// ReadUDPStats reads the "Udp:" counters of /proc/net/snmp.
func ReadUDPStats() (UDPStats, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return UDPStats{}, err
	}
	return parseSNMP(b)
}

// parseSNMP reads the "Udp:" header/value line pair of /proc/net/snmp.
func parseSNMP(b []byte) (UDPStats, error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		vals := f[1:]
		if len(vals) != len(names) {
			return UDPStats{}, fmt.Errorf("/proc/net/snmp: %d Udp names, %d values", len(names), len(vals))
		}
		var s UDPStats
		for i, n := range names {
			v, err := strconv.ParseUint(vals[i], 10, 64)
			if err != nil {
				return UDPStats{}, fmt.Errorf("/proc/net/snmp: Udp %s: %w", n, err)
			}
			switch n {
			case "InDatagrams":
				s.InDatagrams = v
			case "NoPorts":
				s.NoPorts = v
			case "InErrors":
				s.InErrors = v
			case "RcvbufErrors":
				s.RcvbufErrors = v
			case "SndbufErrors":
				s.SndbufErrors = v
			}
		}
		return s, nil
	}
	return UDPStats{}, fmt.Errorf("/proc/net/snmp: no Udp counters")
}

// UDPSocketDrops returns, for each of the given local IPv4 loopback/any
// ports, the "drops" column of /proc/net/udp: datagrams the kernel dropped
// for that socket since it was opened (receive buffer full, mostly).
func UDPSocketDrops(ports ...int) (map[int]uint64, error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return nil, err
	}
	return parseUDPDrops(b, ports...)
}

func parseUDPDrops(b []byte, ports ...int) (map[int]uint64, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	out := map[int]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 {
			continue
		}
		// local_address is HEXIP:HEXPORT
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err != nil || !want[int(p)] {
			continue
		}
		d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/udp: drops %q: %w", f[len(f)-1], err)
		}
		out[int(p)] += d
	}
	return out, sc.Err()
}

// udpPortBound reports whether some IPv4 UDP socket is bound to port.
func udpPortBound(port int) bool {
	m, err := UDPSocketDrops(port)
	if err != nil {
		return false
	}
	_, ok := m[port]
	return ok
}

// Metrics is one scrape of a Prometheus text exposition: sample values by
// series ("name" or `name{label="v",...}` exactly as exposed).
type Metrics map[string]float64

// Scrape fetches and parses a Prometheus /metrics page (text format).
func Scrape(ctx context.Context, url string) (Metrics, error) {
	return ScrapeWith(ctx, http.DefaultClient, url)
}

// ScrapeWith is Scrape through the given client (e.g. one that dials
// inside a network namespace).
func ScrapeWith(ctx context.Context, c *http.Client, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return ParseMetrics(io.LimitReader(res.Body, 16<<20))
}

// ParseMetrics parses the Prometheus text format: one sample per line,
// "series value [timestamp]"; comments and blank lines are skipped.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series may contain spaces inside label values: split after
		// the closing brace when there is one.
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], strings.TrimSpace(line[i+1:])
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], strings.TrimSpace(line[i+1:])
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: value in %q: %w", line, err)
		}
		m[series] = v
	}
	return m, sc.Err()
}

// Sum adds every series of the metric name (all label sets).
func (m Metrics) Sum(name string) float64 {
	var t float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}

// ByLabel returns the series of name summed by the values of the given
// labels, joined with "/" (e.g. "filter/too_large" for stage, reason).
func (m Metrics) ByLabel(name string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	pfx := name + "{"
	for k, v := range m {
		if !strings.HasPrefix(k, pfx) || !strings.HasSuffix(k, "}") {
			continue
		}
		vals := make([]string, len(labels))
		ok := true
		for i, l := range labels {
			if vals[i], ok = labelValue(k[len(pfx):len(k)-1], l); !ok {
				break
			}
		}
		if ok {
			out[strings.Join(vals, "/")] += v
		}
	}
	return out
}

// labelValue finds label="value" in a label list (values are not
// expected to contain escaped quotes here).
func labelValue(labels, label string) (string, bool) {
	for labels != "" {
		eq := strings.IndexByte(labels, '=')
		if eq < 0 || eq+1 >= len(labels) || labels[eq+1] != '"' {
			return "", false
		}
		name := strings.TrimSpace(labels[:eq])
		end := strings.IndexByte(labels[eq+2:], '"')
		if end < 0 {
			return "", false
		}
		val := labels[eq+2 : eq+2+end]
		if name == label {
			return val, true
		}
		labels = strings.TrimLeft(labels[eq+2+end+1:], ", ")
	}
	return "", false
}

// Delta returns after - before for every series of after.
func Delta(before, after Metrics) Metrics {
	d := Metrics{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}
