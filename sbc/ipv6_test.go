package sbc

import (
	"context"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

func TestIPv6Call(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := sipua.NewBackend(sipua.BackendOptions{UDP: "[::1]:0", Logger: testLogger()})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer b.Close()
	pb := testpolicy.New("::1", "::1", b.Addr()).UDPOnly()
	v6 := pb.Trunk("carrier")
	v6.Name = "v6"
	v6.Sources = []string{"::1/128"}
	p := pb.Parse(t)
	s, err := New(p, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ext, _ := s.ListenAddr("external", "udp")
	c, err := sipua.NewCaller(sipua.CallerOptions{Addr: "[::1]:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call, err := c.Dial(ctx, ext.String(), sipua.DialOptions{SDP: sipua.SDP("2001:db8::10", 40000, 1, "sendrecv")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := call.WaitFinal(ctx)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("IPv6 call: %v %v", res, err)
	}
	if err := call.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}
