package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"strconv"
	"strings"
)

const (
	letterBytes   = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	letterIdxBits = 6                    // 6 bits to represent a letter index
	letterIdxMask = 1<<letterIdxBits - 1 // All 1-bits, as many as letterIdxBits
	letterIdxMax  = 63 / letterIdxBits   // # of letter indices fitting in 63 bits
)

// https://stackoverflow.com/questions/22892120/how-to-generate-a-random-string-of-a-fixed-length-in-go
func RandStringBytesMask(sb *strings.Builder, n int) string {
	sb.Grow(n)
	// A rand.Int63() generates 63 random bits, enough for letterIdxMax characters!
	for i, cache, remain := n-1, rand.Int63(), letterIdxMax; i >= 0; {
		if remain == 0 {
			cache, remain = rand.Int63(), letterIdxMax
		}
		if idx := int(cache & letterIdxMask); idx < len(letterBytes) {
			sb.WriteByte(letterBytes[idx])
			i--
		}
		cache >>= letterIdxBits
		remain--
	}

	return sb.String()
}

func isASCII(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// ASCIIToLower is faster than go version. It avoids one more loop
func ASCIIToLower(s string) string {
	// first check is ascii already low to avoid alloc
	nonLowInd := -1
	for i, c := range s {
		if 'a' <= c && c <= 'z' {
			continue
		}
		nonLowInd = i
		break
	}
	if nonLowInd < 0 {
		return s
	}

	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:nonLowInd])
	for i := nonLowInd; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func ASCIIToLowerInPlace(s []byte) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		s[i] = c
	}
}

func ASCIIToUpper(s string) string {
	// first check is ascii already up to avoid alloc
	nonLowInd := -1
	for i, c := range s {
		if 'A' <= c && c <= 'Z' {
			continue
		}
		nonLowInd = i
		break
	}
	if nonLowInd < 0 {
		return s
	}

	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:nonLowInd])
	for i := nonLowInd; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

var (
	hdrVia           = []byte("via")
	hdrFrom          = []byte("from")
	hdrTo            = []byte("to")
	hdrCallID        = []byte("call-id")
	hdrContact       = []byte("contact")
	hdrCSeq          = []byte("cseq")
	hdrContentType   = []byte("content-type")
	hdrContentLength = []byte("content-length")
	hdrRoute         = []byte("route")
	hdrRecordRoute   = []byte("record-route")
	hdrMaxForwards   = []byte("max-forwards")
	hdrTimestamp     = []byte("timestamp")
)

// appendASCIILower appends s lowered (ASCII) to dst.
func appendASCIILower(dst, s []byte) []byte {
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// knownHdr identifies a common header name (headerKnown): its lower-case
// constant (knownHdrName), its slot in a message's header block
// (knownHdrSlot), and a Parser's parser for it (Parser.known).
type knownHdr uint8

const (
	hdrNone knownHdr = iota
	hdrIDVia
	hdrIDFrom
	hdrIDTo
	hdrIDCallID
	hdrIDContact
	hdrIDCSeq
	hdrIDContentType
	hdrIDContentLength
	hdrIDRoute
	hdrIDRecordRoute
	hdrIDMaxForwards
	hdrIDTimestamp
	numKnownHdr
)

var knownHdrName = [numKnownHdr][]byte{
	hdrIDVia: hdrVia, hdrIDFrom: hdrFrom, hdrIDTo: hdrTo, hdrIDCallID: hdrCallID,
	hdrIDContact: hdrContact, hdrIDCSeq: hdrCSeq, hdrIDContentType: hdrContentType,
	hdrIDContentLength: hdrContentLength, hdrIDRoute: hdrRoute, hdrIDRecordRoute: hdrRecordRoute,
	hdrIDMaxForwards: hdrMaxForwards, hdrIDTimestamp: hdrTimestamp,
}

// headerKnown identifies a common header name as it is usually written
// (compact forms give the long name's), hdrNone for the others (the
// parser lowers those on the stack: appendASCIILower). knownHdrName has
// its lower-case constant.
func headerKnown(s []byte) knownHdr {
	if len(s) == 1 {
		c := s[0]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch c {
		case 't':
			return hdrIDTo
		case 'f':
			return hdrIDFrom
		case 'v':
			return hdrIDVia
		case 'i':
			return hdrIDCallID
		case 'l':
			return hdrIDContentLength
		case 'c':
			return hdrIDContentType
		case 'm':
			return hdrIDContact
		}
	}
	// Avoid allocations
	switch string(s) {
	case "Via", "via":
		return hdrIDVia
	case "From", "from":
		return hdrIDFrom
	case "To", "to":
		return hdrIDTo
	case "Call-ID", "call-id":
		return hdrIDCallID
	case "Contact", "contact":
		return hdrIDContact
	case "CSeq", "CSEQ", "cseq":
		return hdrIDCSeq
	case "Content-Type", "content-type":
		return hdrIDContentType
	case "Content-Length", "content-length":
		return hdrIDContentLength
	case "Route", "route":
		return hdrIDRoute
	case "Record-Route", "record-route":
		return hdrIDRecordRoute
	case "Max-Forwards":
		return hdrIDMaxForwards
	case "Timestamp", "timestamp":
		return hdrIDTimestamp
	}
	return hdrNone
}

// debugOn reports whether l logs at debug level. A debug line's
// arguments (a string in an interface is an allocation) are built only
// then: several of them ran for every transaction.
func debugOn(l *slog.Logger) bool {
	return l.Enabled(context.Background(), slog.LevelDebug)
}

// writeInt writes n in decimal to w. For a strings.Builder or a
// bytes.Buffer (every writer of this package) the digits go from the stack
// into the buffer; strconv.Itoa allocated a string for each n >= 100
// (ports, status codes, Content-Length).
func writeInt(w io.StringWriter, n int) {
	var a [20]byte
	b := strconv.AppendInt(a[:0], int64(n), 10)
	switch w := w.(type) {
	case *strings.Builder:
		w.Write(b)
	case *bytes.Buffer:
		w.Write(b)
	default:
		w.WriteString(string(b))
	}
}

// asciiEqualFold reports whether a and b are equal under ASCII case
// folding: HeaderToLower(a) == HeaderToLower(b), without allocating.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// HeaderToLower is fast ASCII lower string
func HeaderToLower(s string) string {
	// Avoid allocations
	switch s {
	case "Via", "via":
		return "via"
	case "From", "from":
		return "from"
	case "To", "to":
		return "to"
	case "Call-ID", "call-id":
		return "call-id"
	case "Contact", "contact":
		return "contact"
	case "CSeq", "CSEQ", "cseq":
		return "cseq"
	case "Content-Type", "content-type":
		return "content-type"
	case "Content-Length", "content-length":
		return "content-length"
	case "Route", "route":
		return "route"
	case "Record-Route", "record-route":
		return "record-route"
	case "Max-Forwards":
		return "max-forwards"
	case "Timestamp", "timestamp":
		return "timestamp"
	}

	// This creates one allocation if we really need to lower
	return ASCIIToLower(s)
}

// Check uri is SIP fast
func UriIsSIP(s string) bool {
	switch s {
	case "sip", "SIP":
		return true
	}
	return false
}

func UriIsSIPS(s string) bool {
	switch s {
	case "sips", "SIPS":
		return true
	}
	return false
}

// Splits the given string into sections, separated by one or more characters
// from c_ABNF_WS.
func splitByWhitespace(text string) []string {
	var buffer bytes.Buffer
	var inString = true
	result := make([]string, 0)

	for _, char := range text {
		s := string(char)
		if strings.Contains(abnf, s) {
			if inString {
				// First whitespace char following text; flush buffer to the results array.
				result = append(result, buffer.String())
				buffer.Reset()
			}
			inString = false
		} else {
			buffer.WriteString(s)
			inString = true
		}
	}

	if buffer.Len() > 0 {
		result = append(result, buffer.String())
	}

	return result
}

// ResolveInterfaceIP will check current interfaces and resolve to IP
// Using targetIP it will try to match interface with same subnet
// network can be "ip" "ip4" "ip6"
// by default it avoids loopack IP unless targetIP is loopback
func ResolveInterfacesIP(network string, targetIP *net.IPNet) (net.IP, net.Interface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, net.Interface{}, err
	}

	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 {
			continue // interface down
		}

		if iface.Flags&net.FlagLoopback != 0 {
			if targetIP != nil && !targetIP.IP.IsLoopback() {
				continue // loopback interface
			}
		}

		ip, err := ResolveInterfaceIp(iface, network, targetIP)
		if errors.Is(err, io.EOF) {
			continue
		}
		return ip, iface, err
	}

	return nil, net.Interface{}, errors.New("no interface found on system")
}

func ResolveInterfaceIp(iface net.Interface, network string, targetIP *net.IPNet) (net.IP, error) {
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, err
	}

	for _, addr := range addrs {
		var ip net.IP
		ipNet, ok := addr.(*net.IPNet)
		if !ok {
			// IPAddr is returned on multicast not on unicast
			continue
		}
		ip = ipNet.IP
		if targetIP != nil {
			if !targetIP.Contains(ip) {
				continue
			}
		} else {
			if ip.IsLoopback() {
				continue
			}
		}

		if ip == nil {
			continue
		}

		// IP is v6 only if this returns nil
		isIP4 := ip.To4() != nil
		switch network {
		case "ip4":
			if isIP4 {
				return ip, nil
			}

		case "ip6":
			if !isIP4 {
				return ip, nil
			}
		}
	}
	return nil, io.EOF
}

func NonceWrite(buf []byte) {
	const letterBytes = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	length := len(letterBytes)
	for i := range buf {
		buf[i] = letterBytes[rand.Intn(length)]
	}
}

// messageShortString dumps short version of msg. Used only for logging
func messageShortString(msg Message) string {
	switch m := msg.(type) {
	case *Request:
		return m.Short()
	case *Response:
		return m.Short()
	}
	return "Unknown message type"
}

func compareFunctions(fsm1 any, fsm2 any) error {
	funcName1 := runtime.FuncForPC(reflect.ValueOf(fsm1).Pointer()).Name()
	funcName2 := runtime.FuncForPC(reflect.ValueOf(fsm2).Pointer()).Name()
	if funcName1 != funcName2 {
		return fmt.Errorf("Functions are not equal f1=%q, f2=%q", funcName1, funcName2)
	}
	return nil
}

// isIPV6 reports whether host is an IPv6 address literal without brackets
// (an IPv4-mapped address or one with a zone is not: net.ParseIP's view).
// A host without ':' is not, without parsing: the common case.
func isIPV6(host string) bool {
	if strings.IndexByte(host, ':') < 0 {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Is6() && !a.Is4In6() && a.Zone() == ""
}

// writeURIHost writes host as a URI or Via needs it: an IPv6 literal in
// brackets.
func writeURIHost(buffer io.StringWriter, host string) {
	if isIPV6(host) {
		buffer.WriteString("[")
		buffer.WriteString(host)
		buffer.WriteString("]")
		return
	}
	buffer.WriteString(host)
}

// uriNetIP returns parsable IP by net
func uriNetIP(ip string) string {
	return strings.Trim(ip, "[]")
}

func printStack(args ...any) {
	buf := make([]byte, 8192)
	n := runtime.Stack(buf, false)
	fmt.Println(args...)
	fmt.Println(string(buf[:n]))
}
