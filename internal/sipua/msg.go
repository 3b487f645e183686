package sipua

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Msg is one SIP message as it arrived on the wire, before any parsing by
// sipgo. Messages the SIP parser would reject are recorded too (with Method
// "" and Status 0 when even the start line is unreadable).
type Msg struct {
	// Seq numbers the messages of one Backend or Caller from 1 upwards, in
	// the order they were read from the sockets.
	Seq uint64
	// Time is when the message was read.
	Time time.Time
	// Transport is "UDP" or "TCP".
	Transport string
	// Source is the remote address ("ip:port") the message came from.
	Source string
	// Local is the local address ("ip:port") it arrived on.
	Local string
	// StartLine is the first line, without CRLF.
	StartLine string
	// Method is the request method ("" for a response).
	Method string
	// Status is the response status code (0 for a request).
	Status int
	// Headers are the header lines as received ("Name: value"), in order;
	// folded continuation lines are joined to their header with one space.
	Headers []string
	// Body is the message body (limited by Content-Length when present).
	Body []byte
	// Raw is the whole message as received.
	Raw []byte
}

// IsRequest reports whether m is a request.
func (m Msg) IsRequest() bool { return m.Method != "" }

// Header returns the value of the first header called name (case-insensitive;
// compact forms such as "i" for Call-ID match too), or "".
func (m Msg) Header(name string) string {
	v := m.HeaderValues(name)
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// HeaderValues returns the values of every header line called name
// (case-insensitive, compact forms included), in order.
func (m Msg) HeaderValues(name string) []string {
	want := strings.ToLower(name)
	compact := compactForm[want]
	var out []string
	for _, h := range m.Headers {
		n, v, ok := strings.Cut(h, ":")
		if !ok {
			continue
		}
		n = strings.ToLower(strings.TrimSpace(n))
		if n == want || (compact != "" && n == compact) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// CallID returns the Call-ID header value.
func (m Msg) CallID() string { return m.Header("Call-ID") }

// CSeqMethod returns the method named in the CSeq header ("INVITE" for the
// responses to an INVITE, for instance).
func (m Msg) CSeqMethod() string {
	f := strings.Fields(m.Header("CSeq"))
	if len(f) < 2 {
		return ""
	}
	return strings.ToUpper(f[1])
}

// Head returns the start line and the header lines joined with CRLF: the part
// of the message in which topology-hiding tests look for leaked addresses.
func (m Msg) Head() string {
	return m.StartLine + "\r\n" + strings.Join(m.Headers, "\r\n")
}

// String returns the raw message.
func (m Msg) String() string { return string(m.Raw) }

var compactForm = map[string]string{
	"call-id":          "i",
	"contact":          "m",
	"content-encoding": "e",
	"content-length":   "l",
	"content-type":     "c",
	"from":             "f",
	"subject":          "s",
	"supported":        "k",
	"to":               "t",
	"via":              "v",
	"refer-to":         "r",
	"referred-by":      "b",
	"event":            "o",
	"allow-events":     "u",
	"accept-contact":   "a",
}

// parseRaw splits a message into start line, header lines and body. It never
// fails: whatever cannot be understood is left empty.
func parseRaw(raw []byte) Msg {
	m := Msg{Raw: raw}
	head := raw
	var body []byte
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		head, body = raw[:i], raw[i+4:]
	} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		head, body = raw[:i], raw[i+2:]
	}
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	// Skip leading empty lines (RFC 3261 7.5 allows them on streams).
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	if len(lines) == 0 {
		return m
	}
	m.StartLine = lines[0]
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(m.Headers) > 0 {
			m.Headers[len(m.Headers)-1] += " " + strings.TrimSpace(l)
			continue
		}
		m.Headers = append(m.Headers, l)
	}
	f := strings.Fields(m.StartLine)
	switch {
	case len(f) >= 2 && strings.HasPrefix(strings.ToUpper(f[0]), "SIP/"):
		if code, err := strconv.Atoi(f[1]); err == nil && code >= 100 && code <= 699 {
			m.Status = code
		}
	case len(f) == 3 && strings.HasPrefix(strings.ToUpper(f[2]), "SIP/"):
		m.Method = f[0]
	}
	if cl := m.Header("Content-Length"); cl != "" {
		if n, err := strconv.Atoi(cl); err == nil && n >= 0 && n < len(body) {
			body = body[:n]
		}
	}
	if len(body) > 0 {
		m.Body = body
	}
	return m
}

// notifier is a broadcast signal: wait returns a channel that is closed at
// the next broadcast.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// Limits that keep a recorder bounded whatever arrives.
const (
	defaultLogLimit  = 10000
	maxStreamBuffer  = 256 << 10 // bytes buffered per TCP connection
	maxStreamStates  = 1024      // TCP connections framed at once
	maxRecordedBytes = 64 << 10  // a single recorded message
)

// recorder is the goroutine-safe log of received messages.
type recorder struct {
	limit int // <0: record nothing

	mu      sync.Mutex
	seq     uint64
	msgs    []Msg
	streams map[string]*bytes.Buffer
	n       notifier
}

func newRecorder(limit int) *recorder {
	if limit == 0 {
		limit = defaultLogLimit
	}
	return &recorder{limit: limit, streams: make(map[string]*bytes.Buffer)}
}

// feed takes raw bytes from the transport read filter. UDP data is one
// message; TCP data is a chunk of a stream that is framed here by
// Content-Length.
// It returns the complete messages (recorded or not, see limit).
func (r *recorder) feed(transport string, local, remote net.Addr, data []byte) []Msg {
	now := time.Now()
	la, ra := addrString(local), addrString(remote)
	if transport == "UDP" {
		return []Msg{r.add(transport, la, ra, now, bytes.Clone(data))}
	}
	key := transport + "|" + la + "|" + ra
	r.mu.Lock()
	buf := r.streams[key]
	if buf == nil {
		if len(r.streams) >= maxStreamStates {
			clear(r.streams)
		}
		buf = new(bytes.Buffer)
		r.streams[key] = buf
	}
	buf.Write(data)
	var out [][]byte
	for {
		msg, ok := nextStreamMessage(buf)
		if !ok {
			break
		}
		out = append(out, msg)
	}
	if buf.Len() > maxStreamBuffer {
		buf.Reset() // hostile or broken stream: stop framing it
	}
	if buf.Len() == 0 {
		delete(r.streams, key)
	}
	r.mu.Unlock()
	msgs := make([]Msg, 0, len(out))
	for _, m := range out {
		msgs = append(msgs, r.add(transport, la, ra, now, m))
	}
	return msgs
}

// nextStreamMessage removes one complete message from buf, if there is one.
func nextStreamMessage(buf *bytes.Buffer) ([]byte, bool) {
	data := buf.Bytes()
	// Keep-alive CRLFs between messages.
	skip := 0
	for skip < len(data) && (data[skip] == '\r' || data[skip] == '\n') {
		skip++
	}
	if skip > 0 {
		buf.Next(skip)
		data = buf.Bytes()
	}
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, false
	}
	hdrEnd := end + 4
	m := parseRaw(data[:hdrEnd])
	n := 0
	if cl := m.Header("Content-Length"); cl != "" {
		v, err := strconv.Atoi(cl)
		if err != nil || v < 0 || v > maxStreamBuffer {
			// Unframeable: record the head and drop the rest of the stream.
			msg := bytes.Clone(data)
			buf.Reset()
			return msg, true
		}
		n = v
	}
	if len(data) < hdrEnd+n {
		return nil, false
	}
	msg := bytes.Clone(data[:hdrEnd+n])
	buf.Next(hdrEnd + n)
	return msg, true
}

func (r *recorder) add(transport, local, remote string, t time.Time, raw []byte) Msg {
	if len(raw) > maxRecordedBytes {
		raw = raw[:maxRecordedBytes]
	}
	m := parseRaw(raw)
	m.Time, m.Transport, m.Local, m.Source = t, transport, local, remote
	if r.limit < 0 {
		return m
	}
	r.mu.Lock()
	r.seq++
	m.Seq = r.seq
	if len(r.msgs) >= r.limit {
		r.msgs = append([]Msg(nil), r.msgs[len(r.msgs)/2:]...)
	}
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	r.n.broadcast()
	return m
}

func (r *recorder) all() []Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Msg(nil), r.msgs...)
}

// since returns the messages with Seq > after and the wait channel that is
// closed when more arrive.
func (r *recorder) since(after uint64) ([]Msg, <-chan struct{}) {
	ch := r.n.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	if len(r.msgs) > 0 && after >= r.msgs[0].Seq {
		i = int(after - r.msgs[0].Seq + 1)
	}
	if i > len(r.msgs) {
		i = len(r.msgs)
	}
	return r.msgs[i:len(r.msgs):len(r.msgs)], ch
}

func (r *recorder) waitFor(ctx context.Context, f func(Msg) bool) (Msg, error) {
	var last uint64
	for {
		msgs, ch := r.since(last)
		for _, m := range msgs {
			if f(m) {
				return m, nil
			}
			last = m.Seq
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Msg{}, ctx.Err()
		}
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
