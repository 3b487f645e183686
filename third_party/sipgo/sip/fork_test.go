package sip

// Tests of the changes of this fork (../README.md).

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/emiago/sipgo/fakes"
	"github.com/stretchr/testify/require"
)

// forkConn is a Connection that records what is written.
type forkConn struct {
	mu  sync.Mutex
	out []Message
}

func (c *forkConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }
func (c *forkConn) WriteMsg(m Message) error {
	c.mu.Lock()
	c.out = append(c.out, m)
	c.mu.Unlock()
	return nil
}
func (c *forkConn) Ref(int) int            { return 1 }
func (c *forkConn) TryClose() (int, error) { return 0, nil }
func (c *forkConn) Close() error           { return nil }

// allocChecks runs f, which checks allocation counts, unless the race
// detector is on (it changes what escapes).
func allocChecks(f func()) {
	if !raceEnabled {
		f()
	}
}

// within runs f and fails the test if it has not returned by d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
	}
}

// OnResponse gets the responses with nobody reading Responses, in order,
// with no lock held (the handler may call the transaction), and the end
// comes after the final response even when the final deletes the
// transaction at once (reliable transport: no Timer K).
func TestForkClientTxOnResponse(t *testing.T) {
	req := testCreateRequest(t, "OPTIONS", "sip:127.0.0.99:5060", "TCP", "127.0.0.2:5060")
	req.SetTransport("TCP")
	tx := NewClientTx("fork-1", req, &forkConn{}, slog.Default())
	var mu sync.Mutex
	var got []string
	tx.OnResponse(func(r *Response) {
		mu.Lock()
		got = append(got, r.StartLine())
		mu.Unlock()
		_ = tx.Err() // takes the FSM lock: a deadlock if called under it
	})
	tx.OnTerminate(func(string, error) {
		mu.Lock()
		got = append(got, "end")
		mu.Unlock()
	})
	require.NoError(t, tx.Init())
	within(t, 5*time.Second, "Receive", func() {
		tx.Receive(NewResponseFromRequest(req, 100, "Trying", nil))
		tx.Receive(NewResponseFromRequest(req, 200, "OK", nil))
	})
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"SIP/2.0 100 Trying", "SIP/2.0 200 OK", "end"}, got)
}

// Terminate stops Timer M of an accepted INVITE client transaction and
// Timer L of an accepted INVITE server transaction: nothing keeps them.
func TestForkTimersLMStopped(t *testing.T) {
	req, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "UDP", "127.0.0.2:5060")
	ctx := NewClientTx("fork-2", req, &forkConn{}, slog.Default())
	ctx.OnResponse(func(*Response) {})
	require.NoError(t, ctx.Init())
	ctx.Receive(NewResponseFromRequest(req, 200, "OK", nil))
	ctx.mu.Lock()
	require.NotNil(t, ctx.timer_m, "accepted: Timer M runs")
	ctx.mu.Unlock()
	ctx.Terminate()
	ctx.mu.Lock()
	require.Nil(t, ctx.timer_m, "Timer M left running after Terminate")
	ctx.mu.Unlock()

	stx := NewServerTx("fork-3", req, &forkConn{}, slog.Default())
	require.NoError(t, stx.Init())
	require.NoError(t, stx.Respond(NewResponseFromRequest(req, 200, "OK", nil)))
	stx.mu.Lock()
	require.NotNil(t, stx.timer_l, "accepted: Timer L runs")
	stx.mu.Unlock()
	stx.Terminate()
	stx.mu.Lock()
	require.Nil(t, stx.timer_l, "Timer L left running after Terminate")
	stx.mu.Unlock()
}

// A retransmitted non-2xx final response after the ACK does not hold the
// goroutine that delivered it for T2 (the ACK is resent later).
func TestForkAckResendDoesNotSleep(t *testing.T) {
	SetTimers(500*time.Millisecond, 30*time.Second, 5*time.Second)
	t.Cleanup(func() { SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second) })
	req, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "UDP", "127.0.0.2:5060")
	req.raddr = Addr{IP: net.ParseIP("127.0.0.99"), Port: 5060}
	conn := &forkConn{}
	tx := NewClientTx("fork-4", req, conn, slog.Default())
	tx.OnResponse(func(*Response) {})
	require.NoError(t, tx.Init())
	defer tx.Terminate()
	busy := NewResponseFromRequest(req, 486, "Busy Here", nil)
	tx.Receive(busy)
	within(t, 10*time.Second, "Receive of a retransmitted 486 (T2 = 30 s)", func() {
		tx.Receive(busy)
		tx.Receive(busy)
	})
}

// With WithTransactionLayerInlineUnreliable a UDP request is handled in
// the goroutine that read it; with two readers per socket, two handlers
// run at once (each waits for the other: with one reader, or handlers
// that queued behind one, this would not end).
func TestForkInlineUDPReaders(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil, WithTransportLayerUDPReaders(2))
	txl := NewTransactionLayer(tpl, WithTransactionLayerInlineUnreliable())
	defer txl.Close()
	var entered sync.WaitGroup
	entered.Add(2)
	both := make(chan struct{})
	go func() { entered.Wait(); close(both) }()
	stacks := make(chan string, 2)
	txl.OnRequest(func(req *Request, tx *ServerTx) {
		buf := make([]byte, 16<<10)
		stacks <- string(buf[:runtime.Stack(buf, false)])
		entered.Done()
		select {
		case <-both:
		case <-time.After(10 * time.Second):
		}
		_ = tx.Respond(NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = tpl.ServeUDP(pc) }()
	defer pc.Close()

	cl, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer cl.Close()
	for i := 0; i < 2; i++ {
		req := testCreateRequest(t, "OPTIONS", "sip:"+pc.LocalAddr().String(), "UDP", cl.LocalAddr().String())
		_, err := cl.WriteTo([]byte(req.String()), pc.LocalAddr())
		require.NoError(t, err)
	}
	select {
	case <-both:
	case <-time.After(10 * time.Second):
		t.Fatal("the two handlers never ran at the same time")
	}
	for i := 0; i < 2; i++ {
		st := <-stacks
		require.True(t, strings.Contains(st, "readLoop"), "handler not in the read loop:\n%s", st)
	}
}

// Header lookups compare names ASCII case-insensitively, as lowering both
// did, and allocate nothing (lowering a name not already lower case took
// an allocation per header passed over).
func TestForkHeaderLookupNoAlloc(t *testing.T) {
	req := NewRequest(INVITE, Uri{Scheme: "sip", Host: "127.0.0.1"})
	req.AppendHeader(NewHeader("X-First", "1"))
	req.AppendHeader(NewHeader("User-Agent", "ua"))
	req.AppendHeader(NewHeader("x-first", "2"))
	req.AppendHeader(NewHeader("P-Asserted-Identity", "<sip:a@b>"))
	for _, name := range []string{"User-Agent", "user-agent", "USER-AGENT", "uSeR-aGeNt"} {
		h := req.GetHeader(name)
		require.NotNil(t, h, name)
		require.Equal(t, "ua", h.Value())
	}
	require.Nil(t, req.GetHeader("User-Agen"))
	require.Nil(t, req.GetHeader("User-Agent2"))
	require.Nil(t, req.GetHeader("User_Agent"))
	hs := req.GetHeaders("X-FIRST")
	require.Len(t, hs, 2)
	require.Equal(t, "1", hs[0].Value())
	require.Equal(t, "2", hs[1].Value())
	// '@' and '`' are one off 'A' and 'Z': they must not fold.
	require.False(t, asciiEqualFold("@", "`"))
	require.False(t, asciiEqualFold("[", "{"))
	require.True(t, asciiEqualFold("Call-ID", "call-id"))
	allocChecks(func() {
		allocs := testing.AllocsPerRun(100, func() {
			if req.GetHeader("P-Asserted-Identity") == nil || req.GetHeader("Missing-Header") != nil {
				t.Fatal("lookup")
			}
		})
		require.Zero(t, allocs)
	})
}

// inString reports whether s lies inside the memory of whole.
func inString(s, whole string) bool {
	if len(s) == 0 {
		return true
	}
	p, w := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(whole)))
	return p >= w && p+uintptr(len(s)) <= w+uintptr(len(whole))
}

// The parser copies a message's start line and headers into one string:
// the values of parsed and generic headers are substrings of it (of the
// Call-ID's, here), not a copy each. A folded header is copied on its own,
// and a stream's leading CRLFs are skipped; both parse as before.
func TestForkParserHeaderValuesShareOneString(t *testing.T) {
	raw := "\r\n\r\nINVITE sip:bob@127.0.0.2 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n" +
		"From: <sip:alice@127.0.0.1>;tag=a1\r\n" +
		"To: <sip:bob@127.0.0.2>\r\n" +
		"Call-ID: call-1@127.0.0.1\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"User-Agent: ua one\r\n" +
		"X-Folded: first\r\n  second\r\n" +
		"X-Lower : after fold \r\n" +
		"Content-Length: 0\r\n\r\n"
	for _, stream := range []bool{false, true} {
		data := []byte(raw)
		if !stream {
			data = data[4:]
		}
		m, n, err := NewParser().Parse(data, stream)
		require.NoError(t, err)
		require.Equal(t, len(data), n)
		req := m.(*Request)
		require.Equal(t, "INVITE sip:bob@127.0.0.2 SIP/2.0", req.StartLine())
		callID := req.CallID().Value()
		require.Equal(t, "call-1@127.0.0.1", callID)
		// The section starts 11 bytes ("INVITE sip:") before the user part.
		base := unsafe.Add(unsafe.Pointer(unsafe.StringData(req.Recipient.User)), -len("INVITE sip:"))
		whole := unsafe.String((*byte)(base), len(raw)-4)
		require.True(t, inString(callID, whole), "Call-ID outside the header section")
		for _, s := range []string{req.Via().Host, req.GetHeader("User-Agent").Value(), req.GetHeader("X-Lower").Value(), req.GetHeader("X-Lower").Name(), req.To().Address.Host, req.CSeq().MethodName.String()} {
			require.True(t, inString(s, whole), "%q outside the header section", s)
		}
		tag, _ := req.From().Params.Get("tag")
		require.True(t, inString(tag, whole), "tag outside the header section")
		require.Equal(t, "first second", req.GetHeader("X-Folded").Value())
		require.False(t, inString(req.GetHeader("X-Folded").Value(), whole), "a folded header is its own copy")
		require.Equal(t, "after fold", req.GetHeader("X-Lower").Value())
		require.Equal(t, "X-Lower", req.GetHeader("X-Lower").Name())
	}

	// No end of the header section in the data: each line on its own, as
	// before (a stream that has not got the whole section yet).
	_, _, err := NewParser().Parse([]byte("OPTIONS sip:b@h SIP/2.0\r\nCall-ID: x\r\n"), true)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// Numbers (ports, status codes, CSeq, Content-Length) are written without
// a string each: serialising a message takes its buffer's growth only.
func TestForkWriteIntNoAlloc(t *testing.T) {
	var sb strings.Builder
	var bb bytes.Buffer
	for _, n := range []int{0, 7, 99, 100, 5060, 65535, 2147483647, -1} {
		sb.Reset()
		bb.Reset()
		writeInt(&sb, n)
		writeInt(&bb, n)
		require.Equal(t, strconv.Itoa(n), sb.String())
		require.Equal(t, strconv.Itoa(n), bb.String())
	}
	res := NewResponse(StatusOK, "OK")
	res.AppendHeader(&ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 5070, Params: NewParams()})
	res.AppendHeader(&CSeqHeader{SeqNo: 12345, MethodName: INVITE})
	cl := ContentLengthHeader(1234)
	res.AppendHeader(&cl)
	want := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070\r\nCSeq: 12345 INVITE\r\nContent-Length: 1234\r\n\r\n"
	require.Equal(t, want, res.String())
	bb.Grow(1024)
	allocChecks(func() {
		allocs := testing.AllocsPerRun(100, func() {
			bb.Reset()
			res.StringWrite(&bb)
		})
		require.Zero(t, allocs)
		require.Equal(t, want, bb.String())
	})
}

// Params are parsed into a slice sized once (an allocation), not grown
// per param.
func TestForkParamsSizedOnce(t *testing.T) {
	s := "branch=z9hG4bK-1;rport;received=127.0.0.3;alias"
	var p HeaderParams
	_, err := UnmarshalHeaderParams(s, ';', '\r', &p)
	require.NoError(t, err)
	require.Equal(t, HeaderParams{{"branch", "z9hG4bK-1"}, {"rport", ""}, {"received", "127.0.0.3"}, {"alias", ""}}, p)
	allocChecks(func() {
		allocs := testing.AllocsPerRun(100, func() {
			var p HeaderParams
			if _, err := UnmarshalHeaderParams(s, ';', '\r', &p); err != nil || len(p) != 4 {
				t.Fatal("params")
			}
		})
		require.Equal(t, 1.0, allocs)
	})

	var a Uri
	var hp HeaderParams
	_, err = ParseAddressValue("<sip:alice@127.0.0.1>;tag=a1;x=1;y;z=2", &a, &hp)
	require.NoError(t, err)
	require.Equal(t, HeaderParams{{"tag", "a1"}, {"x", "1"}, {"y", ""}, {"z", "2"}}, hp)
	addrAllocs := func(v string) float64 {
		return testing.AllocsPerRun(100, func() {
			var a Uri
			var hp HeaderParams
			if _, err := ParseAddressValue(v, &a, &hp); err != nil || len(hp) == 0 {
				t.Fatal("address")
			}
		})
	}
	allocChecks(func() {
		require.Equal(t, addrAllocs("<sip:alice@127.0.0.1>;tag=a1"), addrAllocs("<sip:alice@127.0.0.1>;tag=a1;x=1;y;z=2"),
			"four params cost what one does")
	})
}

// Addr.String is net.JoinHostPort(IP.String(), Itoa(Port)) in one
// allocation; a request's start line writes its URI into the buffer.
func TestForkAddrStringOneAlloc(t *testing.T) {
	for _, a := range []Addr{
		{IP: net.IPv4(127, 0, 0, 1), Port: 5060},
		{IP: net.IP{127, 0, 0, 2}, Port: 0},
		{IP: net.ParseIP("::1"), Port: 5062},
		{IP: net.ParseIP("2001:db8::1:0:0:1"), Port: 65535},
		{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 1},
		{IP: net.IP{}, Port: 5060},
		{IP: net.IP{1, 2, 3}, Port: 5060},
		{Hostname: "example.com", Port: 5061},
	} {
		want := net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
		if a.IP == nil {
			want = net.JoinHostPort(a.Hostname, strconv.Itoa(a.Port))
		}
		require.Equal(t, want, a.String())
	}
	a := Addr{IP: net.ParseIP("127.0.0.1"), Port: 5060}
	allocChecks(func() {
		require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = a.String() }))
	})

	req := NewRequest(INVITE, Uri{Scheme: "sip", User: "bob", Host: "127.0.0.2", Port: 5070, UriParams: HeaderParams{{"transport", "udp"}}})
	var bb bytes.Buffer
	bb.Grow(256)
	allocChecks(func() {
		require.Zero(t, testing.AllocsPerRun(100, func() {
			bb.Reset()
			req.StartLineWrite(&bb)
		}))
	})
	bb.Reset()
	req.StartLineWrite(&bb)
	require.Equal(t, "INVITE sip:bob@127.0.0.2:5070;transport=udp SIP/2.0", bb.String())
}

// A server transaction finds the connection its request came on without a
// context.WithTimeout: the timeout costs nothing unless the layer has to
// resolve or dial.
func TestForkServerConnNoTimer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil)
	txl := NewTransactionLayer(tpl, WithTransactionLayerInlineUnreliable())
	defer txl.Close()
	got := make(chan *Request, 1)
	txl.OnRequest(func(req *Request, tx *ServerTx) {
		_ = tx.Respond(NewResponseFromRequest(req, 200, "OK", nil))
		got <- req
	})
	go func() { _ = tpl.ServeUDP(pc) }()
	defer pc.Close()

	cl, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer cl.Close()
	req := testCreateRequest(t, "OPTIONS", "sip:"+pc.LocalAddr().String(), "UDP", cl.LocalAddr().String())
	_, err = cl.WriteTo([]byte(req.String()), pc.LocalAddr())
	require.NoError(t, err)
	var in *Request
	select {
	case in = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
	conn, err := tpl.serverRequestConnection(context.Background(), in, serverConnTimeout)
	require.NoError(t, err)
	require.NotNil(t, conn)
	conn.TryClose()
	allocs := func(timeout time.Duration) float64 {
		return testing.AllocsPerRun(50, func() {
			c, err := tpl.serverRequestConnection(context.Background(), in, timeout)
			if err != nil || c == nil {
				t.Fatal("no connection")
			}
			c.TryClose()
		})
	}
	allocChecks(func() {
		require.Equal(t, allocs(0), allocs(serverConnTimeout))
	})
}

// The address parser's states are dispatched by a switch: the parser's
// state no longer escapes, and an address without params allocates
// nothing (a nameAddress per From, To, Contact before).
func TestForkAddressParseNoAlloc(t *testing.T) {
	var a Uri
	var hp HeaderParams
	name, err := ParseAddressValue(`"Alice" <sip:alice@127.0.0.1:5060>`, &a, &hp)
	require.NoError(t, err)
	require.Equal(t, "Alice", name)
	require.Equal(t, "alice", a.User)
	require.Equal(t, 5060, a.Port)
	allocChecks(func() {
		require.Zero(t, testing.AllocsPerRun(100, func() {
			if _, err := ParseAddressValue(`"Alice" <sip:alice@127.0.0.1:5060>`, &a, &hp); err != nil {
				t.Fatal(err)
			}
		}))
	})
	for _, bad := range []string{"", `"Alice <sip:a@b>`, "<sip:a@b"} {
		_, err := ParseAddressValue(bad, &a, &hp)
		require.Error(t, err, bad)
	}
}

// Clones are as deep as before, with their headers put in without a
// slice of their own; CopyHeaders copies every header of the name (any
// case), in order, allocating only the clones.
func TestForkCloneAndCopyHeaders(t *testing.T) {
	raw := "INVITE sip:bob@127.0.0.2;transport=udp SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport\r\n" +
		"v: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-0\r\n" +
		"From: <sip:alice@127.0.0.1>;tag=a1\r\n" +
		"To: <sip:bob@127.0.0.2>\r\n" +
		"Call-ID: c1\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"X-1: 1\r\nX-2: 2\r\nX-3: 3\r\nX-4: 4\r\nX-5: 5\r\nX-6: 6\r\n" +
		"Content-Length: 0\r\n\r\n"
	m, err := ParseMessage([]byte(raw))
	require.NoError(t, err)
	req := m.(*Request)
	orig := req.String()
	c := req.Clone()
	require.Equal(t, orig, c.String())
	c.Recipient.UriParams.Add("transport", "tcp")
	c.Via().Params.Add("branch", "z9hG4bK-2")
	c.From().Params.Add("tag", "other")
	require.Equal(t, orig, req.String(), "the clone shares nothing it may change")

	res := NewResponse(200, "OK")
	CopyHeaders("VIA", req, res)
	vias := res.GetHeaders("Via")
	require.Len(t, vias, 2)
	require.Equal(t, "127.0.0.1", vias[0].(*ViaHeader).Host)
	require.Equal(t, "127.0.0.3", vias[1].(*ViaHeader).Host)
	require.NotSame(t, req.Via(), vias[0])

	allocChecks(func() {
		cloneOnly := testing.AllocsPerRun(100, func() {
			for _, h := range req.headerOrder {
				if asciiEqualFold(h.Name(), "via") {
					_ = h.headerClone()
				}
			}
		})
		copyAll := testing.AllocsPerRun(100, func() {
			res.headerOrder = res.headerOrder[:0]
			CopyHeaders("Via", req, res)
		})
		require.Equal(t, cloneOnly, copyAll)
	})
}

// The first Via, From, To, Call-ID, CSeq, Contact, Content-Length,
// Content-Type and Max-Forwards of a message share one allocation; list
// values after the first get their own header; a parser set by
// WithHeadersParsers is used as it is.
func TestForkHeaderBlock(t *testing.T) {
	raw := "INVITE sip:bob@127.0.0.2 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1, SIP/2.0/UDP 127.0.0.4:5060;branch=z9hG4bK-4\r\n" +
		"v: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-0\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: \"A\" <sip:alice@127.0.0.1>;tag=a1\r\n" +
		"To: <sip:bob@127.0.0.2>\r\n" +
		"Call-ID: c1\r\n" +
		"CSeq: 7 INVITE\r\n" +
		"Contact: <sip:alice@127.0.0.1:5060>, <sip:alice@127.0.0.5:5060>\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: 0\r\n\r\n"
	m, err := ParseMessage([]byte(raw))
	require.NoError(t, err)
	req := m.(*Request)
	vias := req.GetHeaders("Via")
	require.Len(t, vias, 3)
	for i, host := range []string{"127.0.0.1", "127.0.0.4", "127.0.0.3"} {
		require.Equal(t, host, vias[i].(*ViaHeader).Host)
	}
	contacts := req.GetHeaders("Contact")
	require.Len(t, contacts, 2)
	require.Equal(t, "127.0.0.5", contacts[1].(*ContactHeader).Address.Host)
	require.Equal(t, "a1", req.From().Params.GetOr("tag", ""))
	require.Equal(t, "bob", req.To().Address.User)
	require.Equal(t, uint32(7), req.CSeq().SeqNo)
	require.Equal(t, "c1", req.CallID().Value())
	require.Equal(t, "application/sdp", req.ContentType().Value())
	require.Equal(t, 70, int(*req.MaxForwards()))

	blk := (*headerBlock)(unsafe.Pointer(vias[0].(*ViaHeader)))
	require.Same(t, &blk.from, req.From())
	require.Same(t, &blk.to, req.To())
	require.Same(t, &blk.cseq, req.CSeq())
	require.Same(t, &blk.callID, req.CallID())
	require.Same(t, &blk.contact, contacts[0])
	require.Same(t, &blk.contentType, req.ContentType())
	require.Same(t, &blk.maxForwards, req.MaxForwards())
	// Their params are in the block too, each with the room its ';'s
	// ask for (Via: 3, the list's; From: 2), and appending past it moves
	// them out rather than writing into the next one's.
	via := vias[0].(*ViaHeader)
	require.Same(t, &blk.kv[0], &via.Params[0])
	require.Same(t, &blk.kv[3], &req.From().Params[0])
	require.Equal(t, 5, blk.kvUsed)
	via.Params.Add("a", "1")
	via.Params.Add("b", "2")
	via.Params.Add("c", "3")
	require.Equal(t, "branch=z9hG4bK-1;a=1;b=2;c=3", via.Params.ToString(';'))
	require.Equal(t, HeaderParams{{"tag", "a1"}}, req.From().Params)
	require.NotSame(t, &blk.via, vias[1])
	require.NotSame(t, &blk.contact, contacts[1])

	// The same message with every header of its own: more allocations.
	own := NewParser()
	own.blockSlots = 0
	data := []byte(raw)
	def := NewParser()
	allocChecks(func() {
		withBlock := testing.AllocsPerRun(50, func() { _, _ = def.ParseSIP(data) })
		without := testing.AllocsPerRun(50, func() { _, _ = own.ParseSIP(data) })
		require.Equal(t, without-10, withBlock, "nine headers and the params of Via and From in one allocation")
	})

	// A parser of one's own for Via is used as it is.
	custom := DefaultHeadersParser()
	parsers := make(map[string]HeaderParser, len(custom))
	for k, v := range custom {
		parsers[k] = v
	}
	called := 0
	parsers["via"] = func(name []byte, text string) (Header, error) {
		called++
		return headerParserVia(name, text)
	}
	p := NewParser(WithHeadersParsers(parsers))
	require.Zero(t, p.blockSlots&slotVia)
	require.NotZero(t, p.blockSlots&slotFrom)
	m, err = p.ParseSIP(data)
	require.NoError(t, err)
	require.Equal(t, 3, called)
	require.Len(t, m.(*Request).GetHeaders("Via"), 3)
}

// A new message and the room for its first ten headers are one
// allocation; an eleventh header moves them out, as appending did.
func TestForkMessageHeaderRoom(t *testing.T) {
	u := Uri{Scheme: "sip", Host: "127.0.0.1"}
	allocChecks(func() {
		require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = NewRequest(OPTIONS, u) }))
		require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = NewResponse(200, "OK") }))
	})
	req := NewRequest(OPTIONS, u)
	res := NewResponse(200, "OK")
	hs := make([]Header, 12)
	for i := range hs {
		hs[i] = NewHeader("X-"+strconv.Itoa(i), strconv.Itoa(i))
		req.AppendHeader(hs[i])
		res.AppendHeader(hs[i])
	}
	require.Equal(t, hs, req.Headers())
	require.Equal(t, hs, res.Headers())
	require.True(t, req.RemoveHeader("X-3"))
	require.Len(t, req.Headers(), 11)
	require.Nil(t, req.GetHeader("X-3"))
	require.Equal(t, "11", req.GetHeader("X-11").Value())
	c := req.Clone()
	require.Equal(t, req.Headers(), c.Headers()[:11])
}

// NewResponseFromRequest clones the first Via, From, To and CSeq into one
// block, with room for rport, received and the To tag; the response is as
// before and shares nothing it may change with the request.
func TestForkResponseBlock(t *testing.T) {
	raw := "INVITE sip:bob@127.0.0.2 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-0\r\n" +
		"Record-Route: <sip:127.0.0.9;lr>\r\n" +
		"From: \"A\" <sip:alice@127.0.0.1;user=phone>;tag=a1\r\n" +
		"To: <sip:bob@127.0.0.2>;x=1\r\n" +
		"Call-ID: c1\r\n" +
		"CSeq: 7 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"
	m, err := ParseMessage([]byte(raw))
	require.NoError(t, err)
	req := m.(*Request)
	req.SetSource("127.0.0.1:5072")
	orig := req.String()
	res := NewResponseFromRequest(req, 180, "Ringing", nil)
	tag, _ := res.To().Params.Get("tag")
	require.NotEmpty(t, tag)
	want := "SIP/2.0 180 Ringing\r\n" +
		"Record-Route: <sip:127.0.0.9;lr>\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport=5072;received=127.0.0.1\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-0\r\n" +
		"From: \"A\" <sip:alice@127.0.0.1;user=phone>;tag=a1\r\n" +
		"To: <sip:bob@127.0.0.2>;x=1;tag=" + tag + "\r\n" +
		"Call-ID: c1\r\n" +
		"CSeq: 7 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"
	require.Equal(t, want, res.String())
	blk := (*responseBlock)(unsafe.Pointer(res.Via()))
	require.Same(t, &blk.from, res.From())
	require.Same(t, &blk.to, res.To())
	require.Same(t, &blk.cseq, res.CSeq())
	require.Same(t, &blk.kv[0], &res.Via().Params[0])

	res.Via().Params.Add("x", "y")
	res.From().Params.Add("tag", "changed")
	res.From().Address.UriParams.Add("user", "ip")
	res.To().Params.Add("z", "1")
	res.CSeq().SeqNo = 8
	require.Equal(t, orig, req.String(), "the response shares nothing it may change")
	require.Equal(t, "z9hG4bK-1", res.Via().Params.GetOr("branch", ""))
	require.Equal(t, "1", res.To().Params.GetOr("x", ""))

	// 100 Trying: no tag added, no Record-Route.
	trying := NewResponseFromRequest(req, 100, "Trying", nil)
	require.False(t, trying.To().Params.Has("tag"))
	require.Nil(t, trying.GetHeader("Record-Route"))
}

// A read loop formats a source address once for a run of datagrams from
// it: the same string as UDPAddr.String, for any address.
func TestForkSrcCache(t *testing.T) {
	var c srcCache
	addrs := []net.Addr{
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060},
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: 5060},
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5061},
		&net.UDPAddr{IP: net.ParseIP("::1"), Port: 5060},
		&net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: 5060, Zone: "lo"},
		&net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: 5060},
		&net.UDPAddr{IP: nil, Port: 5060},
		&net.UDPAddr{IP: net.IP{1, 2, 3}, Port: 5060},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060},
	}
	for _, a := range addrs {
		for i := 0; i < 2; i++ {
			require.Equal(t, a.String(), c.str(a))
		}
	}
	a := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 5060}
	_ = c.str(a)
	allocChecks(func() {
		require.Zero(t, testing.AllocsPerRun(100, func() { _ = c.str(a) }))
	})
}

// A message without Content-Length or Content-Type looks for them without
// allocating, and SetBody allocates a header only when the length
// changes. A response built from a request keeps the request's resolved
// address: its remote address is the one its destination parses to.
func TestForkLazyHeadersAndDestination(t *testing.T) {
	req := NewRequest(OPTIONS, Uri{Scheme: "sip", Host: "127.0.0.1"})
	allocChecks(func() {
		require.Zero(t, testing.AllocsPerRun(100, func() {
			if req.ContentLength() != nil || req.ContentType() != nil {
				t.Fatal("no such header")
			}
		}))
	})
	req.SetBody([]byte("abc"))
	require.Equal(t, 3, int(*req.ContentLength()))
	xyz := []byte("xyz")
	allocChecks(func() {
		require.Zero(t, testing.AllocsPerRun(100, func() { req.SetBody(xyz) }))
	})
	req.SetBody([]byte("abcd"))
	require.Equal(t, 4, int(*req.ContentLength()))
	require.Len(t, req.GetHeaders("Content-Length"), 1)
	req.SetBody(nil)
	require.Equal(t, 0, int(*req.ContentLength()))

	in := NewRequest(INVITE, Uri{Scheme: "sip", Host: "127.0.0.2"})
	in.AppendHeader(&ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 5070, Params: HeaderParams{{"branch", "z9hG4bK-1"}}})
	in.raddr = Addr{IP: net.ParseIP("127.0.0.1"), Port: 5072}
	res := NewResponseFromRequest(in, 200, "OK", nil)
	require.Equal(t, "127.0.0.1:5072", res.Destination())
	got := res.remoteAddress()
	host, port, err := ParseAddr(res.Destination())
	require.NoError(t, err)
	require.Equal(t, Addr{IP: net.ParseIP(host), Port: port, Hostname: res.Destination()}, got)
	res.SetDestination("127.0.0.9:5080")
	require.Equal(t, Addr{IP: net.ParseIP("127.0.0.9"), Port: 5080, Hostname: "127.0.0.9:5080"}, res.remoteAddress(), "a destination set later wins")
}

// Debug lines of a transaction's life are built only when the logger
// logs at debug level (their arguments are allocations), and still
// logged when it does.
func TestForkNoDebugArgsWhenOff(t *testing.T) {
	require.True(t, debugOn(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	require.False(t, debugOn(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	req := testCreateRequest(t, "OPTIONS", "sip:127.0.0.99:5060", "TCP", "127.0.0.2:5060")
	req.SetTransport("TCP")
	debugCalls := 0
	tx := NewServerTx("fork-debug", req, &forkConn{}, slog.New(countHandler{n: &debugCalls}))
	require.NoError(t, tx.Init())
	tx.Terminate()
	require.GreaterOrEqual(t, debugCalls, 3, "initialized, terminating, destroyed")
}

// countHandler counts the records it gets (every level enabled).
type countHandler struct{ n *int }

func (h countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h countHandler) Handle(context.Context, slog.Record) error { *h.n++; return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h countHandler) WithGroup(string) slog.Handler             { return h }

// TestForkURICloneStrings: a CloneStrings copy equals the original and
// shares no string memory with the message it was parsed from.
func TestForkURICloneStrings(t *testing.T) {
	raw := []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sips:bob:pw@host.example:5071;transport=tls;lr?Subject=hi&X=y>\r\nContent-Length: 0\r\n\r\n")
	msg, err := NewParser().ParseSIP(raw)
	if err != nil {
		t.Fatal(err)
	}
	orig := msg.(*Response).Contact().Address
	c := orig.CloneStrings()
	if c.String() != orig.String() {
		t.Fatalf("clone %q, original %q", c.String(), orig.String())
	}
	// No string of the clone points where one of the original does.
	orig2 := orig.Clone()
	pairs := [][2]string{{c.Scheme, orig.Scheme}, {c.User, orig.User}, {c.Password, orig.Password}, {c.Host, orig.Host},
		{c.UriParams[0].K, orig.UriParams[0].K}, {c.Headers[1].V, orig.Headers[1].V}}
	for _, p := range pairs {
		if unsafe.StringData(p[0]) == unsafe.StringData(p[1]) {
			t.Fatalf("clone's %q shares the original's memory", p[0])
		}
	}
	if unsafe.StringData(orig2.Host) != unsafe.StringData(orig.Host) {
		t.Fatal("Clone is expected to share strings (the test's premise)")
	}
	c.UriParams.Add("maddr", "1.2.3.4")
	if _, ok := orig.UriParams.Get("maddr"); ok {
		t.Fatal("clone's params share the original's array")
	}
	empty := (&Uri{}).CloneStrings()
	if empty.String() != (&Uri{}).String() {
		t.Fatal("empty URI")
	}
}

// Over UDP a completed non-INVITE client transaction waits Timer K (T4)
// for retransmitted final responses, an INVITE one Timer D (RFC 3261
// 17.1.2.2, 17.1.1.2): upstream kept both for Timer D, 32 s.
func TestForkNonInviteTimerK(t *testing.T) {
	opt := testCreateRequest(t, "OPTIONS", "sip:127.0.0.99:5060", "UDP", "127.0.0.2:5060")
	otx := NewClientTx("fork-k", opt, &forkConn{}, slog.Default())
	require.NoError(t, otx.Init())
	defer otx.Terminate()
	inv, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "UDP", "127.0.0.2:5060")
	itx := NewClientTx("fork-d", inv, &forkConn{}, slog.Default())
	require.NoError(t, itx.Init())
	defer itx.Terminate()
	otx.mu.Lock()
	k := otx.timer_d_time
	otx.mu.Unlock()
	itx.mu.Lock()
	d := itx.timer_d_time
	itx.mu.Unlock()
	require.Equal(t, Timer_K, k, "non-INVITE wait")
	require.Equal(t, Timer_D, d, "INVITE wait")
}

// An INVITE's non-2xx final response over a reliable transport (Timer D
// is zero) reaches OnResponse before OnTerminate: the deletion waits for
// the delivery, as a non-INVITE's does. Upstream started Timer D with a
// zero duration, whose goroutine could end the transaction while the
// response was being handed over: the TU then saw the transaction end
// without the final response (a 486 turned into a transport failure).
// The handler here lingers, so that a deletion racing it comes first.
func TestForkClientTxInviteFinalBeforeEnd(t *testing.T) {
	req, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "TCP", "127.0.0.2:5060")
	req.SetTransport("TCP")
	tx := NewClientTx("fork-final", req, &forkConn{}, slog.Default())
	var mu sync.Mutex
	var got []string
	ended := make(chan struct{})
	tx.OnResponse(func(r *Response) {
		if r.StatusCode >= 300 {
			select {
			case <-ended:
			case <-time.After(200 * time.Millisecond):
			}
		}
		mu.Lock()
		got = append(got, r.StartLine())
		mu.Unlock()
	})
	tx.OnTerminate(func(string, error) {
		mu.Lock()
		got = append(got, "end")
		mu.Unlock()
		close(ended)
	})
	require.NoError(t, tx.Init())
	within(t, 5*time.Second, "Receive", func() {
		tx.Receive(NewResponseFromRequest(req, 180, "Ringing", nil))
		tx.Receive(NewResponseFromRequest(req, 486, "Busy Here", nil))
	})
	<-ended
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"SIP/2.0 180 Ringing", "SIP/2.0 486 Busy Here", "end"}, got)
}

// TestForkKnownHeaderParsers: the common headers are parsed through the
// Parser's own table (no map lookup), which follows the parsers the
// Parser was made with: one left out gives a generic header, one replaced
// is used, and a name written otherwise ("VIA", "max-forwards") still
// finds its parser and its block slot through the map.
func TestForkKnownHeaderParsers(t *testing.T) {
	raw := "INVITE sip:bob@127.0.0.2 SIP/2.0\r\n" +
		"VIA: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n" +
		"max-forwards: 70\r\n" +
		"From: <sip:alice@127.0.0.1>;tag=a1\r\n" +
		"To: <sip:bob@127.0.0.2>\r\n" +
		"Call-ID: c1\r\n" +
		"CSeq: 7 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"

	m, err := NewParser().ParseSIP([]byte(raw))
	require.NoError(t, err)
	req := m.(*Request)
	via := req.Via()
	require.NotNil(t, via)
	require.Equal(t, "127.0.0.1", via.Host)
	require.Equal(t, 70, int(*req.MaxForwards()))
	blk := (*headerBlock)(unsafe.Pointer(via))
	require.Same(t, &blk.maxForwards, req.MaxForwards())
	require.Same(t, &blk.to, req.To())

	// A parser without a Call-ID parser and with its own To parser.
	own := HeadersParser{}
	for k, v := range DefaultHeadersParser() {
		own[k] = v
	}
	delete(own, "call-id")
	delete(own, "i")
	var toCalls int
	own["to"] = func(name []byte, value string) (Header, error) {
		toCalls++
		return headerParserTo(name, value)
	}
	m, err = NewParser(WithHeadersParsers(own)).ParseSIP([]byte(raw))
	require.NoError(t, err)
	req = m.(*Request)
	require.Equal(t, 1, toCalls, "the Parser's own To parser")
	h := req.GetHeader("Call-ID")
	require.NotNil(t, h)
	_, generic := h.(*genericHeader)
	require.True(t, generic, "Call-ID without a parser is generic, got %T", h)
	require.Equal(t, "c1", h.Value())
}

// TestForkCancel487KeepsTag: the 487 a server transaction sends when its
// INVITE is cancelled carries the To tag of the provisional response
// already sent (RFC 3261 8.2.6.2), not a random tag of its own; before
// any tagged provisional it gets a tag of its own as before.
func TestForkCancel487KeepsTag(t *testing.T) {
	for _, sent := range []int{StatusTrying, StatusRinging} {
		req, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "udp", "127.0.0.2:5060")
		outgoing := &bytes.Buffer{}
		conn := &UDPConnection{PacketConn: &fakes.UDPConn{
			Reader:  &bytes.Buffer{},
			Writers: map[string]io.Writer{"127.0.0.2:5060": outgoing},
		}}
		tx := NewServerTx("487-"+strconv.Itoa(sent), req, conn, slog.Default())
		require.NoError(t, tx.Init())
		require.NoError(t, tx.Respond(NewResponseFromRequestTag(req, sent, "Provisional", nil, "uas-tag-1")))

		cancel := NewRequest(CANCEL, req.Recipient)
		cancel.AppendHeader(HeaderClone(req.Via()))
		cancel.AppendHeader(HeaderClone(req.From()))
		cancel.AppendHeader(HeaderClone(req.To()))
		cancel.AppendHeader(HeaderClone(req.CallID()))
		require.NoError(t, tx.Receive(cancel))

		wire := outgoing.String()
		i := strings.Index(wire, "SIP/2.0 487")
		require.GreaterOrEqual(t, i, 0, "no 487 written: %q", wire)
		m, err := ParseMessage([]byte(wire[i:]))
		require.NoError(t, err)
		tag, _ := m.(*Response).To().Params.Get("tag")
		if sent == StatusRinging {
			require.Equal(t, "uas-tag-1", tag, "the 487 after a 180")
		} else {
			require.NotEmpty(t, tag, "the 487 after a 100 has a tag of its own")
		}
		tx.Terminate()
	}
}

// Fork change 31: a param value is quoted when it has a space or a tab,
// found without building a set per value.
func TestHasLWS(t *testing.T) {
	for v, want := range map[string]bool{"": false, "abc": false, "a b": true, "a\tb": true, "é€": false, "x ": true} {
		if hasLWS(v) != want || hasLWS(v) != strings.ContainsAny(v, abnf) {
			t.Errorf("hasLWS(%q) = %v, want %v", v, hasLWS(v), want)
		}
	}
}

// Fork change 32: params without a quote are parsed in jumps; the result
// must be the rune loop's, quirks included.
func FuzzUnmarshalParamsUnquoted(f *testing.F) {
	for _, s := range []string{
		"branch=z9hG4bK776asdhds;rport;received=192.0.2.1", "tag=a;x", "lr;ftag=é€;x=ü", "k=\xff\xfe;v",
		"=;;=x;", "a;", "a;;b", ";", "a=b;", "a=;b", "lr?x=1", "a=b?c=d;e", "maddr=1\r\nNext: x", "", "==;=",
		`name="q;v";x`, "a=b,c=d;e",
	} {
		for _, se := range [][2]byte{{';', '\r'}, {';', '?'}, {'&', 0}, {';', ','}} {
			f.Add(s, se[0], se[1])
		}
	}
	f.Fuzz(func(t *testing.T, s string, sep, end byte) {
		if sep >= 0x80 || end >= 0x80 {
			return
		}
		var a, b HeaderParams
		na, ok := unmarshalParamsUnquoted(s, sep, end, &a)
		if !ok {
			if len(a) != 0 {
				t.Fatalf("%q: not taken, yet %v added", s, a)
			}
			return
		}
		nb := unmarshalParamsRunes(s, rune(sep), rune(end), &b)
		if na != nb || len(a) != len(b) {
			t.Fatalf("%q sep %q end %q: jumps n=%d %v, runes n=%d %v", s, sep, end, na, a, nb, b)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%q sep %q end %q: param %d: jumps %v, runes %v", s, sep, end, i, a[i], b[i])
			}
		}
	})
}

// TestForkRequestWire (fork change 33): a request given its wire is
// written as those bytes, over UDP and a connection alike; without one,
// or in a Clone, it is serialised.
func TestForkRequestWire(t *testing.T) {
	req, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "udp", "127.0.0.2:5060")
	req.SetDestination("127.0.0.2:5060")
	serialised := req.String()
	wire := []byte(strings.Replace(serialised, "INVITE sip:", "INVITE  sip:", 1)) // distinguishable
	udpWrite := func(r *Request) string {
		out := &bytes.Buffer{}
		conn := &UDPConnection{PacketConn: &fakes.UDPConn{Reader: &bytes.Buffer{}, Writers: map[string]io.Writer{"127.0.0.2:5060": out}}}
		require.NoError(t, conn.WriteMsg(r))
		return out.String()
	}
	require.Equal(t, serialised, udpWrite(req))
	req.SetWire(wire)
	require.Equal(t, string(wire), udpWrite(req))
	require.Equal(t, serialised, udpWrite(req.Clone()))

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		n, _ := b.Read(buf)
		got <- string(buf[:n])
	}()
	tc := &TCPConnection{Conn: a}
	require.NoError(t, tc.WriteMsg(req))
	require.Equal(t, string(wire), <-got)

	req.SetWire(nil)
	require.Equal(t, serialised, udpWrite(req))
}

// TestForkUriStringSizedOnce (fork change 34): Uri.String sizes its
// builder once (two allocations: the builder, which StringWrite's
// io.StringWriter makes escape, and its bytes), and writes what
// StringWrite writes.
func TestForkUriStringSizedOnce(t *testing.T) {
	for _, s := range []string{
		"sip:+15551234567@sbc.example.com;user=phone",
		"sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr;maddr=\"a b\"?subject=x&priority=urgent",
		"sip:127.0.0.1", "tel:+1-201-555-0123", "sip:alice@example.com:5060;ob",
	} {
		var u Uri
		require.NoError(t, ParseUri(s, &u))
		var b bytes.Buffer
		u.StringWrite(&b)
		require.Equal(t, b.String(), u.String())
		if s == "sip:+15551234567@sbc.example.com;user=phone" {
			allocChecks(func() { require.Equal(t, 2.0, testing.AllocsPerRun(100, func() { _ = u.String() })) })
		}
		require.LessOrEqual(t, len(u.String()), u.stringLenMax(), s)
		allocChecks(func() {
			// Growing it from nothing took 5 for the first.
			require.LessOrEqual(t, testing.AllocsPerRun(100, func() { _ = u.String() }), 3.0, s)
		})
	}
}

// Fork change 35: a transaction's state is a method expression, so
// setting it (initFSM here, every transition in the state functions)
// allocates nothing; a method value bound to the transaction allocated
// at each.
func TestForkTxStateNoAlloc(t *testing.T) {
	req, _, _ := testCreateInvite(t, "sip:127.0.0.99:5060", "UDP", "127.0.0.2:5060")
	stx := NewServerTx("fork-state-s", req, &forkConn{}, slog.Default())
	ctx := NewClientTx("fork-state-c", req, &forkConn{}, slog.Default())
	if n := testing.AllocsPerRun(100, stx.initFSM); n != 0 {
		t.Fatalf("ServerTx.initFSM: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, ctx.initFSM); n != 0 {
		t.Fatalf("ClientTx.initFSM: %v allocations", n)
	}
	require.NoError(t, compareFunctions(stx.currentFsmState(), (*ServerTx).inviteStateProcceeding))
	require.NoError(t, compareFunctions(ctx.currentFsmState(), (*ClientTx).inviteStateCalling))
}

// readersConn is a PacketConn that gives each read loop a reader of its
// own (PacketReaders), counting them and what they read.
type readersConn struct {
	net.PacketConn
	mu     sync.Mutex
	given  int
	reads  int
	closed int
}

func (c *readersConn) PacketReader() PacketReader {
	c.mu.Lock()
	c.given++
	c.mu.Unlock()
	return &countingReader{c}
}

// countingReader reads c's socket, counting its reads, and its Close.
type countingReader struct{ c *readersConn }

func (r *countingReader) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := r.c.PacketConn.ReadFrom(b)
	if err == nil {
		r.c.mu.Lock()
		r.c.reads++
		r.c.mu.Unlock()
	}
	return n, a, err
}

func (r *countingReader) Close() error {
	r.c.mu.Lock()
	r.c.closed++
	r.c.mu.Unlock()
	return nil
}

// Fork change 37: each UDP read loop reads through a PacketReader of its
// own when the socket's PacketConn hands them out, what it reads is
// handled as before, and the loop closes its reader when it ends.
func TestForkPacketReaders(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	rc := &readersConn{PacketConn: pc}
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil, WithTransportLayerUDPReaders(3))
	txl := NewTransactionLayer(tpl, WithTransactionLayerInlineUnreliable())
	defer txl.Close()
	txl.OnRequest(func(req *Request, tx *ServerTx) {
		_ = tx.Respond(NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = tpl.ServeUDP(rc) }()
	defer pc.Close()

	cl, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer cl.Close()
	buf := make([]byte, 4096)
	for i := 0; i < 3; i++ {
		req := testCreateRequest(t, "OPTIONS", "sip:"+pc.LocalAddr().String(), "UDP", cl.LocalAddr().String())
		_, err := cl.WriteTo([]byte(req.String()), pc.LocalAddr())
		require.NoError(t, err)
		_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := cl.ReadFrom(buf)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 OK"), "response %q", buf[:n])
	}
	// A loop asks for its reader when it starts: the third may start
	// after the other two have read everything.
	require.Eventually(t, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.given == 3
	}, 10*time.Second, time.Millisecond, "one reader per read loop")
	rc.mu.Lock()
	require.Equal(t, 3, rc.reads, "every datagram read through the loops' readers")
	rc.mu.Unlock()
	// The loops end with the socket, each closing its reader.
	pc.Close()
	require.Eventually(t, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.closed == 3
	}, 10*time.Second, time.Millisecond, "every loop closes its reader")
}

// filteringConn gives readers that filter what they read themselves
// (FilteringPacketReader).
type filteringConn struct {
	net.PacketConn
	mu    sync.Mutex
	given int                // filters given to readers
	props TransportReadProps // the last given
}

func (c *filteringConn) PacketReader() PacketReader { return &filteringReader{c: c} }

type filteringReader struct {
	c *filteringConn
	f TransportReadFilter
	p TransportReadProps
}

func (r *filteringReader) UseReadFilter(f TransportReadFilter, props TransportReadProps) {
	r.c.mu.Lock()
	r.c.given++
	r.c.props = props
	r.c.mu.Unlock()
	r.f, r.p = f, props
}

func (r *filteringReader) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := r.c.PacketConn.ReadFrom(b)
		if err != nil || r.f == nil {
			return n, a, err
		}
		p := r.p
		p.RemoteAddr = a
		out, ferr := r.f(p, b[:n])
		if ferr != nil {
			return 0, nil, ferr
		}
		if len(out) > 0 {
			return copy(b, out), a, nil
		}
	}
}

// TestForkFilteringPacketReader: a reader that filters itself gets the
// transport's read filter and the socket's properties, and the loop does
// not run the filter again on what it returns: each datagram is filtered
// once, and what the filter drops is not handled.
func TestForkFilteringPacketReader(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	fc := &filteringConn{PacketConn: pc}
	var mu sync.Mutex
	filtered := 0
	filter := func(p TransportReadProps, data []byte) ([]byte, error) {
		mu.Lock()
		filtered++
		mu.Unlock()
		if strings.Contains(string(data), "Call-ID: drop") {
			return nil, nil
		}
		return data, nil
	}
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil, WithTransportLayerReadFilter(filter))
	txl := NewTransactionLayer(tpl, WithTransactionLayerInlineUnreliable())
	defer txl.Close()
	txl.OnRequest(func(req *Request, tx *ServerTx) {
		_ = tx.Respond(NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = tpl.ServeUDP(fc) }()
	defer pc.Close()

	cl, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer cl.Close()
	buf := make([]byte, 4096)
	send := func(callID string) {
		req := testCreateRequest(t, "OPTIONS", "sip:"+pc.LocalAddr().String(), "UDP", cl.LocalAddr().String())
		req.ReplaceHeader(NewHeader("Call-ID", callID))
		_, err := cl.WriteTo([]byte(req.String()), pc.LocalAddr())
		require.NoError(t, err)
	}
	send("drop")
	send("keep")
	_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := cl.ReadFrom(buf)
	require.NoError(t, err)
	require.Contains(t, string(buf[:n]), "Call-ID: keep", "the dropped one answered")
	mu.Lock()
	require.Equal(t, 2, filtered, "each datagram filtered once")
	mu.Unlock()
	fc.mu.Lock()
	require.Equal(t, 1, fc.given)
	require.Equal(t, "UDP", fc.props.Transport)
	require.Equal(t, pc.LocalAddr().String(), fc.props.LocalAddr.String())
	fc.mu.Unlock()
}

// TestForkTryingSent: a 100 the TU sent itself stops Timer_1xx, which
// would send another.
func TestForkTryingSent(t *testing.T) {
	req := testCreateRequest(t, "INVITE", "sip:bob@127.0.0.1:5060", "UDP", "127.0.0.1:5070")
	tx := NewServerTx("key", req, &UDPConnection{}, slog.Default())
	require.NoError(t, tx.Init())
	tx.mu.Lock()
	armed := tx.timer_1xx != nil
	tx.mu.Unlock()
	require.True(t, armed, "Timer_1xx armed for an INVITE")
	tx.TryingSent()
	tx.mu.Lock()
	defer tx.mu.Unlock()
	require.Nil(t, tx.timer_1xx, "Timer_1xx still armed")
}
