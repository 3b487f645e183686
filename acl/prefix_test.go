package acl

import (
	"net/netip"
	"testing"
)

func TestSourceKey(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"},
		{"::1", "::/64"},
	}
	for _, tc := range tests {
		got := SourceKey(netip.MustParseAddr(tc.in))
		if got.String() != tc.want {
			t.Errorf("SourceKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if p := SourceKey(netip.Addr{}); p.IsValid() {
		t.Errorf("SourceKey(invalid) = %s, want invalid", p)
	}
	a := netip.MustParseAddr("2001:db8::1")
	if n := testing.AllocsPerRun(100, func() { _ = SourceKey(a) }); n != 0 {
		t.Errorf("SourceKey allocates %.1f times", n)
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: " 192.0.2.7 ", want: "192.0.2.7/32"},
		{in: "192.0.2.7/24", want: "192.0.2.0/24"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "2001:db8::7", want: "2001:db8::7/128"},
		{in: "2001:db8::7/32", want: "2001:db8::/32"},
		{in: "::/0", want: "::/0"},
		{in: "::ffff:192.0.2.7", want: "192.0.2.7/32"},
		{in: "::ffff:192.0.2.7/120", want: "192.0.2.0/24"},
		{in: "::ffff:0.0.0.0/96", want: "0.0.0.0/0"},
		{in: "::ffff:0.0.0.0/95", want: "::fffe:0:0/95"},
		{in: "", wantErr: true},
		{in: "nonsense", wantErr: true},
		{in: "192.0.2.7/33", wantErr: true},
		{in: "192.0.2.300", wantErr: true},
		{in: "fe80::1%eth0", wantErr: true},
		{in: "fe80::1%eth0/64", wantErr: true},
		{in: "2001:db8::/129", wantErr: true},
		{in: "192.0.2.0/-1", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParsePrefix(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParsePrefix(%q) = %s, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"192.0.2.7", "10.0.0.0/8", "::ffff:1.2.3.4/120", "2001:db8::/32", "fe80::1%x", "::/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() && p.Bits() >= 96 {
			t.Fatalf("ParsePrefix(%q) = %s: not canonical", s, p)
		}
		q, err := ParsePrefix(p.String())
		if err != nil || q != p {
			t.Fatalf("ParsePrefix(%q) = %s, reparse gives %s, %v", s, p, q, err)
		}
	})
}
