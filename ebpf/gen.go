package ebpf

// Regenerate xdp_bpfel.go and xdp_bpfel.o from xdp.c (needs clang and
// llvm-strip; `make generate` runs this). The output is committed so that
// `go build` needs no C toolchain; TestGeneratedUpToDate checks it is current.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type lpm_v4_key -type lpm_v6_key -type rl_key -type rl_state -type config xdp xdp.c -- -mcpu=v3 -Wall -Werror
