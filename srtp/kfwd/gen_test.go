//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package kfwd

import (
	"testing"

	"github.com/sbc-project/sbc/internal/bpfgen"
)

// TestGeneratedUpToDate: the committed bpf2go output is what gen.go's
// //go:generate line makes from kfwd.c (internal/bpfgen).
func TestGeneratedUpToDate(t *testing.T) {
	bpfgen.Check(t, "kfwd", "srtp/kfwd", "kfwd")
}
