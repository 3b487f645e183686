package kfwd

// Regenerate kfwd_bpfel.go and kfwd_bpfel.o from kfwd.c (needs clang and
// llvm-strip). The output is committed so that `go build` needs no C
// toolchain.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type flow_key -type flow kfwd kfwd.c -- -mcpu=v3 -Wall -Werror
