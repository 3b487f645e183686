package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sbc-project/sbc/events"
)

// zeroHash is the prev of a chain's first record.
var zeroHash [sha256.Size]byte

// redactor applies redact_fields and mask_numbers.
type redactor struct {
	fields map[string]bool // top-level members
	detail map[string]bool // members of detail
	mask   int
}

func newRedactor(fields []string, mask int) *redactor {
	r := &redactor{fields: map[string]bool{}, detail: map[string]bool{}, mask: mask}
	for _, f := range fields {
		if k, ok := strings.CutPrefix(f, "detail."); ok {
			r.detail[k] = true
		} else {
			r.fields[f] = true
		}
	}
	return r
}

// MaskNumber replaces every digit of s but the last keep with '*'.
func MaskNumber(s string, keep int) string {
	digits := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			digits++
		}
	}
	if digits <= keep {
		return s
	}
	b := []byte(s)
	hide := digits - keep
	for i := 0; i < len(b) && hide > 0; i++ {
		if b[i] >= '0' && b[i] <= '9' {
			b[i] = '*'
			hide--
		}
	}
	return string(b)
}

// fields turns e into the record's members (without seq, prev, hash),
// redacted.
func (r *redactor) record(e events.Event) map[string]any {
	m := make(map[string]any, 16)
	m["ts"] = e.Time.UTC().Format(time.RFC3339Nano)
	m["event"] = string(e.Kind)
	str := func(k, v string) {
		if v == "" {
			return
		}
		if r.fields[k] {
			v = Redacted
		}
		m[k] = v
	}
	num := func(k, v string) {
		if v != "" && r.mask > 0 {
			v = MaskNumber(v, r.mask)
		}
		str(k, v)
	}
	str("session_id", e.SessionID)
	str("call_id", e.CallID)
	num("caller_id", e.Caller)
	num("called_number", e.Called)
	str("source_ip", e.SourceIP)
	str("user_agent", e.UserAgent)
	str("realm", e.Realm)
	str("trunk", e.Trunk)
	str("actor", e.Actor)
	str("reason", e.Reason)
	if e.Duration != 0 || e.Kind == events.CallTerminated {
		if r.fields["duration_ms"] {
			m["duration_ms"] = Redacted
		} else {
			m["duration_ms"] = e.Duration.Milliseconds()
		}
	}
	if len(e.Detail) > 0 {
		if r.fields["detail"] {
			m["detail"] = Redacted
		} else {
			d := make(map[string]any, len(e.Detail))
			for k, v := range e.Detail {
				if r.detail[k] {
					v = Redacted
				}
				d[k] = v
			}
			m["detail"] = d
		}
	}
	return m
}

// chain is an output's hash chain: the last record's seq and hash.
type chain struct {
	seq  uint64
	prev [sha256.Size]byte
}

// seal gives m its seq and prev, and returns the line (with its newline)
// and the new head of the chain, without advancing c (the caller does,
// once the line is written).
func (c *chain) seal(m map[string]any) (line []byte, next chain, err error) {
	m["seq"] = c.seq + 1
	m["prev"] = hex.EncodeToString(c.prev[:])
	canon, err := json.Marshal(m)
	if err != nil {
		return nil, *c, err
	}
	sum := chainHash(c.prev, canon)
	line = make([]byte, 0, len(canon)+len(`,"hash":""`)+2*sha256.Size+1)
	line = append(line, canon[:len(canon)-1]...)
	line = append(line, `,"hash":"`...)
	line = hex.AppendEncode(line, sum[:])
	line = append(line, "\"}\n"...)
	return line, chain{seq: c.seq + 1, prev: sum}, nil
}

func chainHash(prev [sha256.Size]byte, canon []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canon)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// parsed is one line read back: its members, canonical bytes and the
// hash it claims.
type parsed struct {
	seq       uint64
	prev      [sha256.Size]byte
	hash      [sha256.Size]byte
	canonical []byte
	kind      string
}

// parseLine decodes a record line and recomputes its canonical bytes.
func parseLine(line []byte) (*parsed, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, errorf("not a JSON object: %v", err)
	}
	if dec.More() {
		return nil, errorf("more than one JSON value on the line")
	}
	p := &parsed{}
	h, ok := m["hash"].(string)
	if !ok {
		return nil, errorf("no hash")
	}
	if err := decodeHash(h, &p.hash); err != nil {
		return nil, errorf("hash: %v", err)
	}
	pv, ok := m["prev"].(string)
	if !ok {
		return nil, errorf("no prev")
	}
	if err := decodeHash(pv, &p.prev); err != nil {
		return nil, errorf("prev: %v", err)
	}
	n, ok := m["seq"].(json.Number)
	if !ok {
		return nil, errorf("no seq")
	}
	seq, err := strconv.ParseUint(n.String(), 10, 64)
	if err != nil || seq == 0 {
		return nil, errorf("seq %q is not a positive integer", n.String())
	}
	p.seq = seq
	p.kind, _ = m["event"].(string)
	delete(m, "hash")
	if p.canonical, err = json.Marshal(m); err != nil {
		return nil, errorf("re-encoding: %v", err)
	}
	return p, nil
}

func decodeHash(s string, out *[sha256.Size]byte) error {
	if len(s) != 2*sha256.Size {
		return errorf("want %d hex digits, got %d characters", 2*sha256.Size, len(s))
	}
	_, err := hex.Decode(out[:], []byte(s))
	return err
}

type lineError string

func (e lineError) Error() string { return string(e) }

func errorf(format string, args ...any) error {
	return lineError(fmt.Sprintf(format, args...))
}
