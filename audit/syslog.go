package audit

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/sbc-project/sbc/events"
)

// Facilities are the RFC 5424 facility names syslog_facility accepts.
var Facilities = map[string]int{
	"kern": 0, "user": 1, "daemon": 3, "auth": 4, "authpriv": 10, "audit": 13,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// RFC 5424 severities.
const (
	sevWarning = 4
	sevNotice  = 5
	sevInfo    = 6
)

// severity of a record: what an operator should look at is a warning.
func severity(k events.Kind) int {
	switch k {
	case events.AuthFailure, events.Blocked, events.ReloadFailed:
		return sevWarning
	case events.ConfigChanged, events.AdminAction, events.Unblocked, events.OutboundRegistration:
		return sevNotice
	}
	return sevInfo
}

// syslogDialTimeout and syslogWriteTimeout bound a collector's slowness
// (the output's goroutine waits, never the SIP path).
const (
	syslogDialTimeout  = 5 * time.Second
	syslogWriteTimeout = 5 * time.Second
)

// ParseSyslogURL checks a syslog destination: "udp://host:port" or
// "tcp://host:port".
func ParseSyslogURL(s string) (network, addr string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("syslog %q: %w", s, err)
	}
	if u.Scheme != "udp" && u.Scheme != "tcp" {
		return "", "", fmt.Errorf("syslog %q: want udp://host:port or tcp://host:port", s)
	}
	if u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", "", fmt.Errorf("syslog %q: want %s://host:port and nothing else", s, u.Scheme)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return "", "", fmt.Errorf("syslog %q: a port is required", s)
	}
	return u.Scheme, u.Host, nil
}

// syslogWriter sends RFC 5424 messages.
type syslogWriter struct {
	network, addr string
	facility      int
	host, app     string
	procid        string
	conn          net.Conn
	buf           bytes.Buffer
}

func newSyslogWriter(dst string, facility int, host, app string) (*syslogWriter, error) {
	network, addr, err := ParseSyslogURL(dst)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if facility < 0 || facility > 23 {
		return nil, fmt.Errorf("audit: syslog facility %d out of 0–23", facility)
	}
	return &syslogWriter{network: network, addr: addr, facility: facility,
		host: header(host, 255), app: header(app, 48), procid: strconv.Itoa(os.Getpid())}, nil
}

func (s *syslogWriter) key() string {
	return fmt.Sprintf("%s://%s facility %d host %s app %s", s.network, s.addr, s.facility, s.host, s.app)
}

// header makes v a valid RFC 5424 header field: printable US-ASCII without
// spaces, at most max characters, "-" (NILVALUE) when empty.
func header(v string, max int) string {
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v) && len(b) < max; i++ {
		if c := v[i]; c >= 33 && c <= 126 {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// Format5424 formats one RFC 5424 message:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [meta sequenceId="N"] MSG
//
// MSGID is the event kind; MSG the JSON record (MSG-ANY, no BOM); the
// structured data is RFC 5424's registered "meta" element with the
// record's seq (modulo 2^31-1, as sequenceId allows).
func Format5424(dst []byte, facility, severity int, ts time.Time, host, app, procid, msgid string, seq uint64, msg []byte) []byte {
	dst = append(dst, '<')
	dst = strconv.AppendInt(dst, int64(facility*8+severity), 10)
	dst = append(dst, ">1 "...)
	dst = ts.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	dst = append(dst, ' ')
	dst = append(dst, host...)
	dst = append(dst, ' ')
	dst = append(dst, app...)
	dst = append(dst, ' ')
	dst = append(dst, procid...)
	dst = append(dst, ' ')
	dst = append(dst, header(msgid, 32)...)
	dst = append(dst, ` [meta sequenceId="`...)
	dst = strconv.AppendUint(dst, (seq-1)%2147483647+1, 10)
	dst = append(dst, `"] `...)
	return append(dst, msg...)
}

func (s *syslogWriter) write(r record) error {
	msg := bytes.TrimSuffix(r.line, []byte("\n"))
	m := Format5424(nil, s.facility, severity(r.kind), r.ts, s.host, s.app, s.procid, string(r.kind), r.seq, msg)
	s.buf.Reset()
	if s.network == "tcp" {
		// RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
		s.buf.WriteString(strconv.Itoa(len(m)))
		s.buf.WriteByte(' ')
	}
	s.buf.Write(m)
	if s.conn == nil {
		c, err := net.DialTimeout(s.network, s.addr, syslogDialTimeout)
		if err != nil {
			return err
		}
		s.conn = c
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(syslogWriteTimeout))
	n, err := s.conn.Write(s.buf.Bytes())
	if err == nil && n != s.buf.Len() {
		err = errors.New("short write")
	}
	if err != nil {
		// Reconnect at the next record (a TCP stream cut mid-frame cannot
		// go on).
		_ = s.conn.Close()
		s.conn = nil
	}
	return err
}

func (s *syslogWriter) flush() error { return nil }

func (s *syslogWriter) close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
