//go:build linux

// Package bpfgen checks that a package's committed bpf2go output is what
// its //go:generate line makes from its C source (used by the tests of
// ebpf/ and srtp/kfwd/).
package bpfgen

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// generatedWithClang is the clang major version the committed objects
// were built with. Instruction bytes are compared only when the local
// clang has the same major version; the Go output and the map specs
// always are.
const generatedWithClang = "14"

// Check regenerates the bpf2go output of the package in the current
// directory (Go package pkg, directory dir from the repository root,
// output files stem_bpfel.*) into a temporary directory with the exact
// //go:generate command of gen.go and compares it with the committed
// files (the build is reproducible: bpf2go passes -fno-ident and maps the
// source directory out of the debug info).
func Check(t *testing.T, pkg, dir, stem string) {
	t.Helper()
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("SBC_REQUIRE_PRIV") == "1" {
				t.Fatalf("%s is needed to check the generated BPF object (Debian: clang, llvm)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate go run github.com/cilium/ebpf/cmd/bpf2go "); ok {
			args = strings.Fields(rest)
		}
	}
	if len(args) == 0 {
		t.Fatal("no bpf2go //go:generate line in gen.go")
	}
	tmp := t.TempDir()
	cmd := exec.Command(goBin, append([]string{"run", "github.com/cilium/ebpf/cmd/bpf2go", "-output-dir", tmp}, args...)...)
	cmd.Env = append(os.Environ(), "GOPACKAGE="+pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}

	fix := "; run `go generate ./" + dir + "` (make generate) and commit the result"
	for _, name := range []string{stem + "_bpfel.go"} {
		want, err := os.ReadFile(filepath.Join(tmp, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s.c"+fix, name, stem)
		}
	}

	fresh, err := os.ReadFile(filepath.Join(tmp, stem+"_bpfel.o"))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(stem + "_bpfel.o")
	if err != nil {
		t.Fatal(err)
	}
	specFresh, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(fresh))
	if err != nil {
		t.Fatal(err)
	}
	specCommitted, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(committed))
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range specFresh.Maps {
		c, ok := specCommitted.Maps[name]
		if !ok || c.Type != m.Type || c.KeySize != m.KeySize || c.ValueSize != m.ValueSize ||
			c.MaxEntries != m.MaxEntries || c.Flags != m.Flags || c.Pinning != m.Pinning {
			t.Errorf("map %s differs from %s.c"+fix, name, stem)
		}
	}
	if len(specFresh.Maps) != len(specCommitted.Maps) || len(specFresh.Programs) != len(specCommitted.Programs) {
		t.Errorf("map or program set differs from %s.c"+fix, stem)
	}

	out, _ := exec.Command("clang", "--version").Output()
	major := ""
	if m := regexp.MustCompile(`clang version (\d+)`).FindSubmatch(out); m != nil {
		major = string(m[1])
	}
	if major != generatedWithClang {
		t.Logf("clang %q here, object built with clang %s: instruction bytes not compared", major, generatedWithClang)
		return
	}
	if !bytes.Equal(fresh, committed) {
		t.Errorf("%s_bpfel.o differs from %s.c"+fix, stem, stem)
	}
}
