package sip

import (
	"bytes"
	"strings"
	"testing"
)

func TestIsIPV6(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1":        false,
		"example.com":      false,
		"a.b":              false,
		"::1":              true,
		"2001:db8::1":      true,
		"::ffff:127.0.0.1": false, // IPv4-mapped: net.ParseIP's To4 view
		"fe80::1%eth0":     false, // net.ParseIP takes no zone
		"[::1]":            false, // already bracketed
		"host:5060":        false,
		"":                 false,
	} {
		if got := isIPV6(host); got != want {
			t.Errorf("isIPV6(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestWriteURIHost(t *testing.T) {
	for host, want := range map[string]string{
		"10.0.0.1":      "10.0.0.1",
		"sbc.example":   "sbc.example",
		"2001:db8::5":   "[2001:db8::5]",
		"[2001:db8::5]": "[2001:db8::5]",
	} {
		var b strings.Builder
		writeURIHost(&b, host)
		if b.String() != want {
			t.Errorf("writeURIHost(%q) = %q, want %q", host, b.String(), want)
		}
	}
	u := Uri{Scheme: "sip", User: "alice", Host: "2001:db8::5", Port: 5060}
	if got := u.String(); got != "sip:alice@[2001:db8::5]:5060" {
		t.Errorf("IPv6 URI written as %q", got)
	}
	var buf bytes.Buffer
	if n := testing.AllocsPerRun(100, func() {
		buf.Reset()
		writeURIHost(&buf, "192.0.2.10")
		writeURIHost(&buf, "2001:db8::5")
	}); n != 0 {
		t.Errorf("writeURIHost: %v allocations, want 0", n)
	}
}
