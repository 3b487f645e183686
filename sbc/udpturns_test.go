package sbc

import (
	"errors"
	"net"
	"testing"
	"time"
)

// Readers of one UDP socket take turns (udppeers.go): while the socket
// keeps up one reads and the others are parked; a lagging socket wakes
// them; a parked reader reads when the one that had the turn stopped
// reading (its handler blocked); retiring the generation or stopping the
// SBC releases parked readers.
func TestUDPReadersTakeTurns(t *testing.T) {
	if !enableRxStamps(mustUDP(t)) {
		t.Skip("no SO_TIMESTAMPNS on this platform")
	}
	e := newEnv(t, envOpts{})
	u := e.sbc.realms["external"].peers

	type result struct {
		msg string
		err error
	}
	setup := func(t *testing.T) (*udpGen, chan struct{}, func(...string), func(bool) <-chan result) {
		quit := make(chan struct{})
		g, send := stampedGen(t, u, quit)
		// reader is one of sipgo's read loops, with a reader of its own
		// (PacketReader): it reads once and stops there, its "handler"
		// never returning, or, looping, reads until its read fails.
		reader := func(looping bool) <-chan result {
			c := make(chan result, 4)
			go func() {
				rd := g.PacketReader()
				b := make([]byte, 2048)
				for {
					n, _, err := rd.ReadFrom(b)
					c <- result{string(b[:n]), err}
					if !looping || err != nil {
						return
					}
				}
			}()
			return c
		}
		return g, quit, send, reader
	}
	until := func(t *testing.T, what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	get := func(t *testing.T, who string, c <-chan result) result {
		t.Helper()
		select {
		case r := <-c:
			return r
		case <-time.After(10 * time.Second):
			t.Fatalf("%s read nothing", who)
			return result{}
		}
	}
	const (
		m1 = "OPTIONS sip:one@b SIP/2.0\r\n\r\n"
		m2 = "OPTIONS sip:two@b SIP/2.0\r\n\r\n"
	)
	// a reads; b parks while a is in the read.
	twoReaders := func(t *testing.T, g *udpGen, reader func(bool) <-chan result, looping bool) (a, b <-chan result) {
		t.Helper()
		a = reader(looping)
		until(t, "the first reader reads the socket", func() bool { return g.reading.Load() == 1 })
		b = reader(looping)
		until(t, "the second reader is parked", func() bool { return g.waiting.Load() == 1 })
		return a, b
	}

	t.Run("a blocked handler does not stall the socket", func(t *testing.T) {
		g, _, send, reader := setup(t)
		a, b := twoReaders(t, g, reader, false)
		send(m1)
		if r := get(t, "the reader with the turn", a); r.err != nil || r.msg != m1 {
			t.Fatalf("first reader: %q, %v", r.msg, r.err)
		}
		// a never reads again; b, parked, must see that none reads.
		send(m2)
		if r := get(t, "the parked reader", b); r.err != nil || r.msg != m2 {
			t.Fatalf("parked reader: %q, %v", r.msg, r.err)
		}
	})

	t.Run("a lagging socket wakes the parked reader", func(t *testing.T) {
		g, _, send, reader := setup(t)
		a, b := twoReaders(t, g, reader, true)
		g.pace(2 * lagOn) // what a reader notes for a datagram that waited
		until(t, "both readers read the socket", func() bool { return g.reading.Load() == 2 })
		send(m1)
		send(m2)
		// Either reader may read both: one batch can hold the two.
		got := map[string]bool{}
		for len(got) < 2 {
			select {
			case r := <-a:
				got[r.msg] = r.err == nil
			case r := <-b:
				got[r.msg] = r.err == nil
			case <-time.After(10 * time.Second):
				t.Fatalf("the two readers read %v, want both datagrams", got)
			}
		}
		if !got[m1] || !got[m2] {
			t.Fatalf("the two readers read %v, want both datagrams", got)
		}
		if g.lagging.Load() {
			t.Fatal("still lagging after datagrams read at once")
		}
	})

	t.Run("retiring or stopping releases a parked reader", func(t *testing.T) {
		g, quit, send, reader := setup(t)
		a, b := twoReaders(t, g, reader, false)
		g.retire()
		close(quit)
		if r := get(t, "the parked reader", b); !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("parked reader: %q, %v; want net.ErrClosed", r.msg, r.err)
		}
		send(m1) // the reader in the read returns what it reads
		if r := get(t, "the reader with the turn", a); r.err != nil || r.msg != m1 {
			t.Fatalf("first reader: %q, %v", r.msg, r.err)
		}
	})
}
