package attack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CorpusMessage is one message of the RFC 4475 torture-test corpus.
type CorpusMessage struct {
	Name    string // file name, e.g. "badinv01.dat"
	Section string // RFC 4475 section, e.g. "3.1.2.1"
	Class   string // INDEX.tsv class: "valid", "invalid" or "semantic"
	Data    []byte // exact bytes
}

// LoadRFC4475 reads the corpus in dir (INDEX.tsv: file, section, class,
// title, expected behaviour; one .dat file per message) and returns the
// messages of the given classes in index order; no classes means
// "invalid".
func LoadRFC4475(dir string, classes ...string) ([]CorpusMessage, error) {
	if len(classes) == 0 {
		classes = []string{"invalid"}
	}
	want := map[string]bool{}
	for _, c := range classes {
		want[strings.ToLower(c)] = true
	}
	f, err := os.Open(filepath.Join(dir, "INDEX.tsv"))
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	defer f.Close()
	var out []CorpusMessage
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		cols := strings.Split(sc.Text(), "\t")
		if line == 1 && len(cols) > 0 && cols[0] == "filename" {
			continue // header row
		}
		if len(cols) < 3 || cols[0] == "" {
			continue
		}
		name, class := cols[0], strings.ToLower(cols[2])
		if !want[class] {
			continue
		}
		if name != filepath.Base(name) || strings.HasPrefix(name, ".") {
			return nil, fmt.Errorf("attack: INDEX.tsv:%d: bad file name %q", line, name)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("attack: INDEX.tsv:%d: %w", line, err)
		}
		if len(data) > maxDatagram {
			return nil, fmt.Errorf("attack: %s: %d bytes, more than a UDP datagram", name, len(data))
		}
		out = append(out, CorpusMessage{Name: name, Section: cols[1], Class: class, Data: data})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("attack: INDEX.tsv: %w", err)
	}
	return out, nil
}

// MalformedStormConfig configures MalformedStorm and
// NewMalformedGenerator.
type MalformedStormConfig struct {
	// Target is where every datagram goes (required for MalformedStorm).
	Target netip.AddrPort
	// Local is the address and port to send from (see
	// ExtensionScanConfig.Local).
	Local netip.AddrPort
	// Domain is the host part of the URIs of generated messages; default
	// the target address, or "sbc.invalid" without a target.
	Domain string
	// CorpusDir is an RFC 4475 corpus directory with INDEX.tsv (e.g.
	// /work/shared/corpora/rfc4475); empty sends generated garbage only.
	CorpusDir string
	// Classes selects corpus messages by INDEX.tsv class; default
	// {"invalid"}.
	Classes []string
	// Seed makes the sequence of datagrams: the same seed and corpus give
	// the same bytes.
	Seed uint64
	// MaxSize bounds generated datagrams in bytes; default 8192, at most
	// 65507 (huge headers grow up to it).
	MaxSize int
	// Rate, Count (default 1000), Duration (default 10s) and Linger
	// (default 0) work as in InviteFloodConfig.
	Rate     float64
	Count    int
	Duration time.Duration
	Linger   time.Duration
}

// Malformed is one datagram of the storm.
type Malformed struct {
	// Kind names where it came from: "rfc4475:<file>" or a generated
	// kind (see MalformedKinds).
	Kind string
	Data []byte
}

// MalformedGenerator yields the storm's datagrams. It is deterministic
// and not safe for concurrent use.
type MalformedGenerator struct {
	rng     *rand.Rand
	corpus  []CorpusMessage
	maxSize int
	domain  string
	n       int
}

// generated kinds, in the order the seed picks from.
var malformedKinds = []struct {
	name string
	gen  func(g *MalformedGenerator) []byte
}{
	{"random", (*MalformedGenerator).random},
	{"truncated", (*MalformedGenerator).truncated},
	{"huge-header", (*MalformedGenerator).hugeHeader},
	{"nul", (*MalformedGenerator).nul},
	{"bad-content-length", (*MalformedGenerator).badContentLength},
	{"bad-start-line", (*MalformedGenerator).badStartLine},
	{"many-headers", (*MalformedGenerator).manyHeaders},
	{"bare-lf", (*MalformedGenerator).bareLF},
	{"binary-header", (*MalformedGenerator).binaryHeader},
	{"no-colon", (*MalformedGenerator).noColon},
	{"folding", (*MalformedGenerator).folding},
	{"empty", func(*MalformedGenerator) []byte { return []byte{} }},
}

// MalformedKinds returns the names of the generated kinds.
func MalformedKinds() []string {
	out := make([]string, len(malformedKinds))
	for i, k := range malformedKinds {
		out[i] = k.name
	}
	return out
}

// NewMalformedGenerator makes the generator of cfg: Seed, CorpusDir,
// Classes, MaxSize and Domain are used. With a corpus, even datagrams
// (0, 2, 4 …) are the corpus messages in index order, cycling, and odd
// ones generated; without, all are generated.
func NewMalformedGenerator(cfg MalformedStormConfig) (*MalformedGenerator, error) {
	g := &MalformedGenerator{
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x5bc4475)),
		maxSize: cfg.MaxSize,
		domain:  cfg.Domain,
	}
	if g.maxSize <= 0 {
		g.maxSize = 8192
	}
	if g.maxSize > maxDatagram {
		g.maxSize = maxDatagram
	}
	if g.maxSize < 512 {
		return nil, fmt.Errorf("attack: MaxSize %d: want at least 512", g.maxSize)
	}
	if g.domain == "" {
		g.domain = "sbc.invalid"
		if cfg.Target.IsValid() {
			g.domain = domainOf("", cfg.Target)
		}
	}
	if cfg.CorpusDir != "" {
		c, err := LoadRFC4475(cfg.CorpusDir, cfg.Classes...)
		if err != nil {
			return nil, err
		}
		if len(c) == 0 {
			return nil, fmt.Errorf("attack: no %v messages in %s", cfg.Classes, cfg.CorpusDir)
		}
		g.corpus = c
	}
	return g, nil
}

// Next returns the next datagram; Data is the caller's.
func (g *MalformedGenerator) Next() Malformed {
	i := g.n
	g.n++
	if len(g.corpus) > 0 && i%2 == 0 {
		m := g.corpus[(i/2)%len(g.corpus)]
		return Malformed{Kind: "rfc4475:" + m.Name, Data: bytes.Clone(m.Data)}
	}
	k := malformedKinds[g.rng.IntN(len(malformedKinds))]
	d := k.gen(g)
	if len(d) > g.maxSize {
		d = d[:g.maxSize]
	}
	return Malformed{Kind: k.name, Data: d}
}

// base is a well-formed INVITE with SDP, varied by the seed; the
// generated kinds break it.
func (g *MalformedGenerator) base() []byte {
	id := g.rng.Uint64()
	body := fmt.Sprintf("v=0\r\no=- %d 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\n", id%1e9, 10000+2*g.rng.IntN(10000))
	return fmt.Appendf(nil, "INVITE sip:%d@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK%x;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:storm@%s>;tag=%x\r\n"+
		"To: <sip:%d@%s>\r\n"+
		"Call-ID: %x@storm\r\n"+
		"CSeq: 1 INVITE\r\n"+
		"Contact: <sip:storm@192.0.2.1:5060>\r\n"+
		"Content-Type: application/sdp\r\n"+
		"Content-Length: %d\r\n\r\n%s",
		100+id%900, g.domain, id, g.domain, id>>8, 100+id%900, g.domain, id>>16, len(body), body)
}

// headerEnd is the index of the blank line of m, or len(m).
func headerEnd(m []byte) int {
	if i := bytes.Index(m, []byte("\r\n\r\n")); i >= 0 {
		return i
	}
	return len(m)
}

// insertHeader puts line (without CRLF) after the start line.
func insertHeader(m []byte, line string) []byte {
	i := bytes.Index(m, []byte("\r\n")) + 2
	out := make([]byte, 0, len(m)+len(line)+2)
	out = append(out, m[:i]...)
	out = append(out, line...)
	out = append(out, "\r\n"...)
	return append(out, m[i:]...)
}

func (g *MalformedGenerator) random() []byte {
	n := 1 + g.rng.IntN(min(g.maxSize, 1400))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	return b
}

func (g *MalformedGenerator) truncated() []byte {
	m := g.base()
	return m[:1+g.rng.IntN(headerEnd(m))]
}

func (g *MalformedGenerator) hugeHeader() []byte {
	m := g.base()
	room := g.maxSize - len(m) - 64
	if room < 64 {
		room = 64
	}
	n := room
	if room > 4096 {
		n = 4096 + g.rng.IntN(room-4096+1)
	}
	long := strings.Repeat(string(rune('a'+g.rng.IntN(26))), n)
	switch g.rng.IntN(4) {
	case 0:
		return insertHeader(m, "Subject: "+long)
	case 1:
		return insertHeader(m, "X-"+long+": 1")
	case 2:
		return insertHeader(m, "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK"+long)
	default:
		return bytes.Replace(m, []byte("From: <"), []byte(`From: "`+long+`" <`), 1)
	}
}

func (g *MalformedGenerator) nul() []byte {
	m := g.base()
	end := headerEnd(m)
	for range 1 + g.rng.IntN(8) {
		i := g.rng.IntN(end)
		m = append(m[:i], append([]byte{0}, m[i:]...)...)
	}
	return m
}

func (g *MalformedGenerator) badContentLength() []byte {
	m := g.base()
	end := headerEnd(m)
	bodyLen := len(m) - end - 4
	vals := []string{"-1", "-999", "99999999999999999999", "4294967296", "abc", "", "0x20", "+" + strconv.Itoa(bodyLen),
		strconv.Itoa(bodyLen + 1 + g.rng.IntN(1000)), strconv.Itoa(g.rng.IntN(max(bodyLen, 1))),
		strconv.Itoa(bodyLen) + "\r\nContent-Length: " + strconv.Itoa(bodyLen+7), "1 2"}
	v := vals[g.rng.IntN(len(vals))]
	return bytes.Replace(m, []byte("Content-Length: "+strconv.Itoa(bodyLen)), []byte("Content-Length: "+v), 1)
}

func (g *MalformedGenerator) badStartLine() []byte {
	m := g.base()
	lines := []string{
		"INVITE  sip:100@" + g.domain + " SIP/2.0",
		"INVITE sip:100@" + g.domain + " SIP/3.0",
		"INVITE sip:100@" + g.domain,
		"INVITE",
		"sip:100@" + g.domain + " SIP/2.0 INVITE",
		"INVITE <sip:100@" + g.domain + "> SIP/2.0",
		"SIP/2.0 2000 OK",
		"SIP/2.0 99 Weird",
		strings.Repeat("A", 1+g.rng.IntN(2000)) + " sip:100@" + g.domain + " SIP/2.0",
		"GET / HTTP/1.1",
		"INVITE sip:100@" + g.domain + " sip/2.0",
		"INVITE sip:%00@" + g.domain + " SIP/2.0 ",
	}
	i := bytes.Index(m, []byte("\r\n"))
	return append([]byte(lines[g.rng.IntN(len(lines))]), m[i:]...)
}

func (g *MalformedGenerator) manyHeaders() []byte {
	m := g.base()
	room := g.maxSize - len(m)
	names := []string{"Via: SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK", "Record-Route: <sip:192.0.2.4;lr>;x=", "X-A: ", "Route: <sip:192.0.2.5;lr>;y="}
	name := names[g.rng.IntN(len(names))]
	var b strings.Builder
	for i := 0; b.Len()+len(name)+12 < room && i < 10000; i++ {
		b.WriteString(name)
		b.WriteString(strconv.Itoa(i))
		b.WriteString("\r\n")
	}
	if b.Len() == 0 {
		return m
	}
	return insertHeader(m, strings.TrimSuffix(b.String(), "\r\n"))
}

func (g *MalformedGenerator) bareLF() []byte {
	m := g.base()
	switch g.rng.IntN(3) {
	case 0:
		return bytes.ReplaceAll(m, []byte("\r\n"), []byte("\n"))
	case 1:
		return bytes.ReplaceAll(m, []byte("\r\n"), []byte("\r"))
	default: // mixed: only the headers after the first two lose their CR
		i := bytes.Index(m, []byte("\r\n")) + 2
		j := bytes.Index(m[i:], []byte("\r\n")) + i + 2
		return append(m[:j:j], bytes.ReplaceAll(m[j:], []byte("\r\n"), []byte("\n"))...)
	}
}

func (g *MalformedGenerator) binaryHeader() []byte {
	m := g.base()
	v := make([]byte, 8+g.rng.IntN(200))
	for i := range v {
		c := byte(g.rng.Uint32())
		if c == '\r' || c == '\n' {
			c = 0x7f
		}
		v[i] = c
	}
	names := []string{"Subject", "From", "To", "Call-ID", "CSeq", "Via"}
	name := names[g.rng.IntN(len(names))]
	return insertHeader(m, name+": "+string(v))
}

func (g *MalformedGenerator) noColon() []byte {
	m := g.base()
	headers := []string{"Via:", "From:", "To:", "Call-ID:", "CSeq:", "Max-Forwards:", "Content-Length:"}
	h := headers[g.rng.IntN(len(headers))]
	return bytes.Replace(m, []byte(h), []byte(strings.TrimSuffix(h, ":")), 1)
}

func (g *MalformedGenerator) folding() []byte {
	m := g.base()
	n := 1 + g.rng.IntN(max(1, (g.maxSize-len(m))/8))
	var b strings.Builder
	b.WriteString("Subject: x")
	for range n {
		b.WriteString("\r\n \tx")
	}
	return insertHeader(m, b.String())
}

// MalformedStorm sends the datagrams of NewMalformedGenerator(cfg) to
// the target: RFC 4475 messages of the chosen classes and generated
// garbage (random bytes, truncated headers, huge headers, NULs, bad
// Content-Length, broken start lines, …), deterministic from Seed. It is
// bounded by Count and Duration, paced by Rate. The error is non-nil only
// when the storm could not start.
func MalformedStorm(ctx context.Context, cfg MalformedStormConfig) (Report, error) {
	var rep Report
	if cfg.Count < 0 || cfg.Duration < 0 || cfg.Rate < 0 || cfg.Linger < 0 {
		return rep, errors.New("attack: MalformedStorm: negative Count, Duration, Rate or Linger")
	}
	if cfg.Count == 0 {
		cfg.Count = defaultCount
	}
	if cfg.Duration == 0 {
		cfg.Duration = defaultDuration
	}
	if err := checkTarget(cfg.Target); err != nil {
		return rep, err
	}
	g, err := NewMalformedGenerator(cfg)
	if err != nil {
		return rep, err
	}
	conn, err := dialUDP(cfg.Local, cfg.Target)
	if err != nil {
		return rep, err
	}
	col := startCollector(conn, false)
	start := time.Now()
	p := newPacer(ctx, start, deadlineOf(ctx, start, cfg.Duration), cfg.Rate)
	defer p.stop()
	rep.Stop = StopCount
	for n := 0; n < cfg.Count; n++ {
		if stop := p.wait(n); stop != "" {
			rep.Stop = stop
			break
		}
		if _, err := conn.Write(g.Next().Data); err != nil {
			sendErr(&rep, err)
			continue
		}
		rep.Sent++
	}
	rep.SendElapsed = time.Since(start)
	col.linger(ctx, cfg.Linger, rep.Sent)
	col.finish(conn, &rep)
	rep.Elapsed = time.Since(start)
	return rep, nil
}
