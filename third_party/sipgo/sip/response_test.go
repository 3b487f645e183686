package sip

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewResponseFromRequestRecordRoute(t *testing.T) {
	// RFC 3261 Table 3, with the early-INVITE rule from §12.1–12.1.1.
	for _, tc := range []struct {
		method RequestMethod
		status int
		copy   bool
	}{
		{INVITE, 100, false},
		{INVITE, 101, true},
		{INVITE, 180, true},
		{INVITE, 183, true},
		{INVITE, 200, true},
		{INVITE, 302, false},
		{INVITE, 487, false},
		{INVITE, 500, false},
		{INVITE, 603, false},
		{BYE, 200, true},
		{CANCEL, 200, true},
		{OPTIONS, 200, true},
		{OPTIONS, 183, true},
		{OPTIONS, 199, false},
		{REGISTER, 200, false},
		{ACK, 200, false},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.method, tc.status), func(t *testing.T) {
			req := NewRequest(tc.method, Uri{Host: "example.com"})
			req.AppendHeader(NewHeader("Record-Route", "<sip:p1.example.com;lr;transport=udp>"))
			req.AppendHeader(NewHeader("Record-Route", "<sip:p2.example.com;lr>"))

			res := NewResponseFromRequest(req, tc.status, "Test", nil)
			routes := res.GetHeaders("Record-Route")
			if !tc.copy {
				require.Empty(t, routes)
				return
			}

			require.Len(t, routes, 2)
			require.Equal(t, "<sip:p1.example.com;lr;transport=udp>", routes[0].Value())
			require.Equal(t, "<sip:p2.example.com;lr>", routes[1].Value())
		})
	}
}

// NewResponseFromRequestTag gives the To tag asked for when the request's
// To has none, keeps the request's own tag when it has one, adds none to
// a 100, and leaves the request untouched.
func TestNewResponseFromRequestTag(t *testing.T) {
	raw := "INVITE sip:bob@example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n" +
		"From: <sip:alice@example.com>;tag=a1\r\n" +
		"To: <sip:bob@example.com>\r\n" +
		"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	msg, err := ParseMessage([]byte(raw))
	require.NoError(t, err)
	req := msg.(*Request)

	for _, code := range []int{180, 200, 486} {
		res := NewResponseFromRequestTag(req, code, "X", nil, "ours")
		tag, _ := res.To().Params.Get("tag")
		require.Equal(t, "ours", tag, "code %d", code)
	}
	res := NewResponseFromRequestTag(req, 100, "Trying", nil, "ours")
	require.False(t, res.To().Params.Has("tag"), "a 100 got a tag")
	require.False(t, req.To().Params.Has("tag"), "the request's To was changed")

	// No tag asked for: a random one, as NewResponseFromRequest gives.
	res = NewResponseFromRequestTag(req, 200, "OK", nil, "")
	tag, _ := res.To().Params.Get("tag")
	require.NotEmpty(t, tag)
	require.NotEqual(t, "ours", tag)

	// The request has a tag: it stays.
	req.To().Params.Add("tag", "theirs")
	res = NewResponseFromRequestTag(req, 200, "OK", nil, "ours")
	tag, _ = res.To().Params.Get("tag")
	require.Equal(t, "theirs", tag)
}
