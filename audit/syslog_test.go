package audit

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/sbc-project/sbc/events"
)

// checkMessage checks one RFC 5424 message parsed by go-syslog (strict,
// not best effort) against the event it carries, and returns its MSG.
func checkMessage(t *testing.T, m syslog.Message, want events.Kind, wantSev uint8, seq int, wantTime time.Time) string {
	t.Helper()
	sm, ok := m.(*rfc5424.SyslogMessage)
	if !ok || !sm.Valid() {
		t.Fatalf("not a valid RFC 5424 message: %#v", m)
	}
	if *sm.Facility != 16 || *sm.Severity != wantSev || sm.Version != 1 {
		t.Errorf("facility %d severity %d version %d, want 16 %d 1", *sm.Facility, *sm.Severity, sm.Version, wantSev)
	}
	if *sm.Hostname != "sbc-test" || *sm.Appname != "sbc" || *sm.MsgID != string(want) || sm.ProcID == nil {
		t.Errorf("header host %v app %v msgid %v procid %v", *sm.Hostname, *sm.Appname, *sm.MsgID, sm.ProcID)
	}
	// The header's TIMESTAMP is the event's time.
	if sm.Timestamp == nil || !sm.Timestamp.Equal(wantTime) {
		t.Errorf("timestamp %v, want %v", sm.Timestamp, wantTime)
	}
	if sm.StructuredData == nil || (*sm.StructuredData)["meta"]["sequenceId"] != itoa(seq) {
		t.Errorf("structured data %v, want meta sequenceId=%d", sm.StructuredData, seq)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(*sm.Message), &rec); err != nil || rec["event"] != string(want) {
		t.Errorf("MSG %q is not the %s record: %v", *sm.Message, want, err)
	}
	return *sm.Message
}

func itoa(i int) string { return strconv.Itoa(i) }

var syslogEvents = []struct {
	kind events.Kind
	sev  uint8
}{{events.CallStarted, 6}, {events.AuthFailure, 4}, {events.ConfigChanged, 5}}

func TestSyslogUDP5424(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := newCounts()
	l, err := Open(Config{Syslog: "udp://" + pc.LocalAddr().String(), SyslogFacility: Facilities["local0"],
		Hostname: "sbc-test", AppName: "sbc", Hooks: c.hooks()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, se := range syslogEvents {
		e := callEvent(1)
		e.Kind = se.kind
		e.UserAgent = "evil\"] agent\n<13>1 forged" // hostile text stays inside MSG
		l.Emit(e)
	}
	p := rfc5424.NewParser()
	var msgs []string
	buf := make([]byte, 65536)
	for i, se := range syslogEvents {
		_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		m, err := p.Parse(buf[:n])
		if err != nil {
			t.Fatalf("datagram %d %q: %v", i, buf[:n], err)
		}
		msgs = append(msgs, checkMessage(t, m, se.kind, se.sev, i+1, callEvent(1).Time))
	}
	// The MSGs are one hash chain.
	if res, err := VerifyReader("syslog", strings.NewReader(strings.Join(msgs, "\n")+"\n")); err != nil || res.Records != 3 {
		t.Fatalf("the syslog records' chain: %+v %v", res, err)
	}
}

func TestSyslogTCPOctetCounting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *syslog.Result, 16)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		octetcounting.NewParser(syslog.WithListener(func(r *syslog.Result) { got <- r })).Parse(conn)
	}()
	l, err := Open(Config{Syslog: "tcp://" + ln.Addr().String(), SyslogFacility: 16, Hostname: "sbc-test", AppName: "sbc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range syslogEvents {
		e := callEvent(2)
		e.Kind = se.kind
		l.Emit(e)
	}
	for i, se := range syslogEvents {
		select {
		case r := <-got:
			if r.Error != nil {
				t.Fatalf("frame %d: %v", i, r.Error)
			}
			checkMessage(t, r.Message, se.kind, se.sev, i+1, callEvent(2).Time)
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d not received", i)
		}
	}
	l.Close()
}

func TestSyslogURL(t *testing.T) {
	for _, ok := range []string{"udp://127.0.0.1:514", "tcp://[::1]:601", "udp://logs.example:514"} {
		if _, _, err := ParseSyslogURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"127.0.0.1:514", "tls://127.0.0.1:6514", "udp://127.0.0.1", "udp://127.0.0.1:514/x", "unix:///dev/log"} {
		if _, _, err := ParseSyslogURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	m := Format5424(nil, 13, 4, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), "h", "sbc", "42", "blocked", 7, []byte("{}"))
	if want := `<108>1 2026-01-02T03:04:05.000006Z h sbc 42 blocked [meta sequenceId="7"] {}`; !bytes.Equal(m, []byte(want)) {
		t.Fatalf("got  %s\nwant %s", m, want)
	}
}

// TestSyslogCollectorDown: records sent to a collector that refuses the
// connection are counted as write_error, and Close does not hang.
func TestSyslogCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := newCounts()
	l, err := Open(Config{Syslog: "tcp://" + addr, Hooks: c.hooks()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		l.Emit(callEvent(i))
	}
	l.Close()
	if got := c.get(c.dropped, "syslog/write_error"); got != 3 {
		t.Fatalf("write_error drops %d, want 3", got)
	}
}
