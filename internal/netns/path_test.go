package netns_test

import (
	"testing"

	"github.com/sbc-project/sbc/internal/netns"
)

func TestPath(t *testing.T) {
	for in, want := range map[string]string{
		"sbc-a":          "/var/run/netns/sbc-a",
		"/proc/1/ns/net": "/proc/1/ns/net",
		"./rel/ns":       "./rel/ns",
		"":               "",
	} {
		if got := netns.Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
}
