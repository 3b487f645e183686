package attack_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sbc-project/sbc/bench/attack"
)

// An unprivileged flood from 64 loopback sources into a Sink.
func ExampleSpoofedFlood() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sink, err := attack.NewSink(attack.SinkConfig{Addr: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sink.Close()
	rep, err := attack.SpoofedFlood(ctx, attack.SpoofedFloodConfig{
		Target:     sink.Addr(),
		Sources:    netip.MustParsePrefix("127.66.0.0/16"),
		Mode:       attack.SpoofLoopback,
		MaxSources: 64,
		Count:      128,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := sink.Wait(ctx, rep.Sent); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Mode, rep.Sent, sink.DistinctSources())
	// Output: loopback 128 64
}

// The malformed datagrams are deterministic from the seed and can be fed
// to a parser without a network.
func ExampleNewMalformedGenerator() {
	g, err := attack.NewMalformedGenerator(attack.MalformedStormConfig{Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 3 {
		m := g.Next()
		_ = m.Data // e.g. sbc's read filter or validator under test
		fmt.Println(m.Kind)
	}
	// Output:
	// random
	// binary-header
	// empty
}

func ExampleExtensionScan() {
	ctx := context.Background()
	rep, err := attack.ExtensionScan(ctx, attack.ExtensionScanConfig{
		Target:  netip.MustParseAddrPort("127.0.0.1:5060"),
		Local:   netip.MustParseAddrPort("127.0.0.66:0"),
		First:   100,
		Last:    199,
		Methods: []string{"OPTIONS"},
		Timeout: 200 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Report, len(rep.Existing()))
}

func ExampleDigestBruteForce() {
	rep, err := attack.DigestBruteForce(context.Background(), attack.DigestBruteForceConfig{
		Target:    netip.MustParseAddrPort("127.0.0.1:5060"),
		Local:     netip.MustParseAddrPort("127.0.0.66:0"),
		Extension: "100",
		Passwords: []string{"100", "1234", "secret"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Found, rep.Password, rep.Attempts, rep.Challenges, rep.Stop)
}

func ExampleInviteFlood() {
	rep, err := attack.InviteFlood(context.Background(), attack.InviteFloodConfig{
		Target: netip.MustParseAddrPort("127.0.0.1:5060"),
		Local:  netip.MustParseAddrPort("127.0.0.66:0"),
		Rate:   500, Count: 5000, Duration: 10 * time.Second,
		SDP: true, Linger: time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Sent, rep.Responses[503], rep.Rate())
}

func ExampleMalformedStorm() {
	rep, err := attack.MalformedStorm(context.Background(), attack.MalformedStormConfig{
		Target:    netip.MustParseAddrPort("127.0.0.1:5060"),
		Local:     netip.MustParseAddrPort("127.0.0.66:0"),
		CorpusDir: "/work/shared/corpora/rfc4475",
		Seed:      1, Count: 2000, Rate: 1000,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep)
}
