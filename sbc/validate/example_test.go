package validate_test

import (
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/sbc/validate"
)

// A request handler answers a verdict with its code and extra header, or
// drops the message when the verdict says so.
func Example() {
	data := []byte(strings.Join([]string{
		"OPTIONS sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK74bf9",
		"Max-Forwards: 70",
		"To: <sip:bob@example.com>",
		"From: <sip:alice@example.org>;tag=9fxced76sl",
		"Call-ID: 3848276298220188511@example.org",
		"CSeq: 1 OPTIONS",
		"Require: foo",
		"Content-Length: 0",
		"", ""}, "\r\n"))

	opt := validate.Options{}
	if r := validate.Raw(data, opt); r != nil { // in the read filter
		fmt.Println("drop", r.Why)
		return
	}
	msg, err := sip.NewParser().ParseSIP(data)
	if err != nil {
		fmt.Println("drop parse")
		return
	}
	req := msg.(*sip.Request)
	if r := validate.Request(req, opt); r != nil { // in the handler
		if r.Drop {
			fmt.Println("drop", r.Why)
			return
		}
		res := sip.NewResponseFromRequest(req, r.Code, r.Reason, nil)
		if r.Header != nil {
			res.AppendHeader(r.Header)
		}
		fmt.Println(res.StartLine(), "|", r.Header, "|", r.Why)
	}
	// Output: SIP/2.0 420 Bad Extension | Unsupported: foo | bad_extension
}
