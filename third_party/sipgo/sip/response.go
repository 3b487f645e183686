package sip

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Response RFC 3261 - 7.2.
type Response struct {
	MessageData

	Reason     string // e.g. "200 OK"
	StatusCode int    // e.g. 200

	// raddr is resolved address from request, the destination set from
	// it when raddrOf is that destination (remoteAddress need not parse
	// it back).
	raddr   Addr
	raddrOf string
}

// NewResponse creates base structure of response.
func NewResponse(
	statusCode int,
	reason string,
) *Response {
	return newResponse(statusCode, reason, 10)
}

type responseWithRoom struct {
	Response
	room [msgHeaderRoom]Header
}

// newResponse is NewResponse with room for n headers.
func newResponse(statusCode int, reason string, n int) *Response {
	var res *Response
	if n <= msgHeaderRoom {
		// The response and room for its headers in one allocation.
		rh := &responseWithRoom{}
		res = &rh.Response
		res.headers = headers{headerOrder: rh.room[:0:n]}
	} else {
		res = &Response{}
		res.headers = headers{headerOrder: make([]Header, 0, n)}
	}
	res.SipVersion = "SIP/2.0"
	res.StatusCode = statusCode
	res.Reason = reason
	res.body = nil

	return res
}

// Short is textual short version of response
func (res *Response) Short() string {
	if res == nil {
		return "<nil>"
	}

	return fmt.Sprintf("response status=%d reason=%s transport=%s source=%s",
		res.StatusCode,
		res.Reason,
		res.Transport(),
		res.Source(),
	)
}

// StartLine returns Response Status Line - RFC 2361 7.2.
func (res *Response) StartLine() string {
	var buffer strings.Builder
	// Every SIP response starts with a Status Line - RFC 2361 7.2.
	res.StartLineWrite(&buffer)
	return buffer.String()
}

func (res *Response) StartLineWrite(buffer io.StringWriter) {
	buffer.WriteString(res.SipVersion)
	buffer.WriteString(" ")
	writeInt(buffer, int(res.StatusCode))
	buffer.WriteString(" ")
	buffer.WriteString(res.Reason)
}

func (res *Response) String() string {
	var buffer strings.Builder
	res.StringWrite(&buffer)
	return buffer.String()
}

func (res *Response) StringWrite(buffer io.StringWriter) {
	res.StartLineWrite(buffer)
	buffer.WriteString("\r\n")
	// Write the headers.
	res.headers.StringWrite(buffer)
	// Empty line
	buffer.WriteString("\r\n")
	// message body
	if res.body != nil {
		// buffer.WriteString("\r\n")
		buffer.WriteString(string(res.body))
		return
	}
	// buffer.WriteString("\r\n")
}

func (res *Response) Clone() *Response {
	return cloneResponse(res)
}

func (res *Response) IsProvisional() bool {
	return res.StatusCode < 200
}

func (res *Response) IsSuccess() bool {
	return res.StatusCode >= 200 && res.StatusCode < 300
}

func (res *Response) IsRedirection() bool {
	return res.StatusCode >= 300 && res.StatusCode < 400
}

func (res *Response) IsClientError() bool {
	return res.StatusCode >= 400 && res.StatusCode < 500
}

func (res *Response) IsServerError() bool {
	return res.StatusCode >= 500 && res.StatusCode < 600
}

func (res *Response) IsGlobalError() bool {
	return res.StatusCode >= 600
}

func (res *Response) IsAck() bool {
	if cseq := res.CSeq(); cseq != nil {
		return cseq.MethodName == ACK
	}
	return false
}

func (res *Response) IsCancel() bool {
	if cseq := res.CSeq(); cseq != nil {
		return cseq.MethodName == CANCEL
	}
	return false
}

func (res *Response) Transport() string {
	if tp := res.MessageData.Transport(); tp != "" {
		return tp
	}

	var tp string
	if viaHop := res.Via(); viaHop != nil && viaHop.Transport != "" {
		tp = viaHop.Transport
	} else {
		tp = DefaultProtocol
	}

	return tp
}

// Destination will return host:port address
// In case of building response from request, request source is set as destination
// This will sent response over same connection if request is parsed from network
func (res *Response) Destination() string {
	// https://datatracker.ietf.org/doc/html/rfc3581#section-4
	// Server behavior:
	// The response must be sent from the same address and port that the
	// request was received on in order to traverse symmetric NATs.
	if dest := res.MessageData.Destination(); dest != "" {
		return dest
	}

	viaHop := res.Via()
	if viaHop == nil {
		return ""
	}

	var (
		host string
		port int
	)

	host = viaHop.Host
	if viaHop.Port > 0 {
		port = viaHop.Port
	} else {
		port = int(DefaultPort(res.Transport()))
	}

	if viaHop.Params != nil {
		if received, ok := viaHop.Params.Get("received"); ok && received != "" {
			host = received
		}
		if rport, ok := viaHop.Params.Get("rport"); ok && rport != "" {
			if p, err := strconv.Atoi(rport); err == nil {
				port = p
			}
		}
	}

	return fmt.Sprintf("%v:%v", host, port)
}

// responseBlock holds the headers NewResponseFromRequest clones from its
// request: one allocation instead of one per header and params list.
type responseBlock struct {
	via    ViaHeader
	from   FromHeader
	to     ToHeader
	cseq   CSeqHeader
	kv     [8]HeaderKV
	kvUsed int
}

// params clones p (nil stays nil) with room for extra more params, in
// the block's kv while it lasts.
func (b *responseBlock) params(p HeaderParams, extra int) HeaderParams {
	if p == nil {
		return nil
	}
	n := len(p) + extra
	if b.kvUsed+n > len(b.kv) {
		return append(make(HeaderParams, 0, n), p...)
	}
	out := append(b.kv[b.kvUsed:b.kvUsed:b.kvUsed+n], p...)
	b.kvUsed += n
	return out
}

// cloneVia is b.via = *v.Clone(), with room for rport and received.
func (b *responseBlock) cloneVia(v *ViaHeader) {
	b.via = ViaHeader{
		ProtocolName:    v.ProtocolName,
		ProtocolVersion: v.ProtocolVersion,
		Transport:       v.Transport,
		Host:            v.Host,
		Params:          b.params(v.Params, 2),
	}
	if v.Port > 0 {
		b.via.Port = v.Port
	}
}

// RFC 3261 - 8.2.6
func NewResponseFromRequest(
	req *Request,
	statusCode int,
	reason string,
	body []byte,
) *Response {
	return NewResponseFromRequestTag(req, statusCode, reason, body, "")
}

// NewResponseFromRequestTag is NewResponseFromRequest with the To tag a
// response other than 100 gets when the request's To has none: toTag, or a
// random one when toTag is "". A UAS answering a dialog-creating request
// keeps one tag for all its responses (RFC 3261 8.2.6.2) without a copy
// of the request carrying it.
func NewResponseFromRequestTag(
	req *Request,
	statusCode int,
	reason string,
	body []byte,
	toTag string,
) *Response {
	res := NewResponse(
		statusCode,
		reason,
	)
	res.SipVersion = req.SipVersion
	// RFC 3261 §20, Table 3.
	allowedMethod := req.Method != REGISTER && !req.IsAck()
	allowedStatus := (statusCode >= 180 && statusCode < 190) ||
		(statusCode >= 200 && statusCode < 300)
	// RFC 3261 §12.1–12.1.1 also requires copying for early-dialog responses.
	earlyInvite := req.IsInvite() && statusCode > 100 && statusCode < 200
	if allowedMethod && (allowedStatus || earlyInvite) {
		CopyHeaders("Record-Route", req, res)
	}
	// The first Via, From, To and CSeq are cloned into one block, their
	// params with room for the rport, received and tag added below.
	blk := &responseBlock{}
	viaDone := false
	for _, h := range req.headerOrder {
		if !asciiEqualFold(h.Name(), "Via") {
			continue
		}
		if v, ok := h.(*ViaHeader); ok && !viaDone && v != nil {
			blk.cloneVia(v)
			res.AppendHeader(&blk.via)
		} else {
			res.AppendHeader(h.headerClone())
		}
		viaDone = true
	}
	if h := req.From(); h != nil {
		blk.from = FromHeader{DisplayName: h.DisplayName, Address: *h.Address.Clone(), Params: blk.params(h.Params, 0)}
		res.AppendHeader(&blk.from)
	}

	if h := req.To(); h != nil {
		blk.to = ToHeader{DisplayName: h.DisplayName, Address: *h.Address.Clone(), Params: blk.params(h.Params, 1)}
		res.AppendHeader(&blk.to)
	}

	if h := req.CallID(); h != nil {
		res.AppendHeader(h.headerClone())
	}

	if h := req.CSeq(); h != nil {
		blk.cseq = CSeqHeader{SeqNo: h.SeqNo, MethodName: h.MethodName}
		res.AppendHeader(&blk.cseq)
	}

	if h := res.Via(); h != nil {
		// https://datatracker.ietf.org/doc/html/rfc3581#section-4
		if val, exists := h.Params.Get("rport"); exists && val == "" {
			host, port, _ := net.SplitHostPort(req.Source())
			h.Params.Add("rport", port)
			h.Params.Add("received", host)
		}
	}

	// 8.2.6.2 Headers and Tags
	// the response (with the exception of the 100 (Trying) response, in
	// which a tag MAY be present). This serves to identify the UAS that is
	// responding, possibly resulting in a component of a dialog ID. The
	// same tag MUST be used for all responses to that request, both final
	// and provisional (again excepting the 100 (Trying)). Procedures for
	// the generation of tags are defined in Section 19.3.
	switch statusCode {
	case 100:
		CopyHeaders("Timestamp", req, res)
	default:
		if h := res.To(); h != nil {
			if !h.Params.Has("tag") {
				if toTag == "" {
					toTag = uuid.NewString()
				}
				h.Params.Add("tag", toTag)
			}
		}
	}

	res.SetBody(body)
	res.SetTransport(req.Transport())

	// If raddr is present this is resolved remote addr based on via header, otherwise use connection based source addr
	if req.raddr.IP != nil {
		res.raddr = req.raddr
		res.raddrOf = req.raddr.String()
		res.SetDestination(res.raddrOf)
	} else {
		res.SetDestination(req.Source())
	}

	return res
}

// TODO we may want to have resolved IP destination as seperate variable like request
func (r *Response) remoteAddress() Addr {
	dst := r.dest
	if r.raddr.IP != nil && dst != "" && dst == r.raddrOf {
		return Addr{IP: r.raddr.IP, Port: r.raddr.Port, Hostname: dst}
	}
	host, port, _ := ParseAddr(dst)
	return Addr{
		IP:       net.ParseIP(host),
		Port:     port,
		Hostname: dst,
	}
}

// NewSDPResponseFromRequest is wrapper for 200 response with SDP body
func NewSDPResponseFromRequest(req *Request, body []byte) *Response {
	res := NewResponseFromRequest(req, StatusOK, "OK", body)
	res.AppendHeader(NewHeader("Content-Type", "application/sdp"))
	res.SetBody(body)
	return res
}

func cloneResponse(res *Response) *Response {
	newRes := newResponse(
		res.StatusCode,
		res.Reason,
		max(10, len(res.headerOrder)),
	)
	newRes.SipVersion = res.SipVersion

	for _, h := range res.headerOrder {
		newRes.AppendHeader(h.headerClone())
	}

	newRes.SetBody(res.Body())

	// newRes.SetPrevious(res.Previous())
	newRes.SetTransport(res.Transport())
	newRes.SetSource(res.Source())
	newRes.SetDestination(res.Destination())

	return newRes
}

func CopyResponse(res *Response) *Response {
	return cloneResponse(res)
}
