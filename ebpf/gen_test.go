//go:build linux

package ebpf

import (
	"testing"

	"github.com/sbc-project/sbc/internal/bpfgen"
)

// TestGeneratedUpToDate: the committed bpf2go output is what gen.go's
// //go:generate line makes from xdp.c (internal/bpfgen).
func TestGeneratedUpToDate(t *testing.T) {
	bpfgen.Check(t, "ebpf", "ebpf", "xdp")
}
