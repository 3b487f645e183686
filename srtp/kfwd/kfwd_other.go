//go:build !(linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64))

package kfwd

import (
	"errors"
	"net/netip"
	"time"
)

// Forwarder is not available on this platform.
type Forwarder struct{}

// Config: see the Linux version.
type Config struct {
	Interfaces []string
	Egress     func(dst netip.Addr) int
}

// Open fails: the kernel path needs Linux.
func Open(Config) (*Forwarder, error) { return nil, errors.New("kfwd: needs Linux") }

// Close does nothing.
func (*Forwarder) Close() error { return nil }

// Offload fails.
func (*Forwarder) Offload(_, _, _, _ netip.AddrPort) error { return errors.New("kfwd: needs Linux") }

// Unload does nothing.
func (*Forwarder) Unload(_, _ netip.AddrPort) {}

// Counters reports nothing.
func (*Forwarder) Counters(_, _ netip.AddrPort) (uint64, uint64, time.Time, bool) {
	return 0, 0, time.Time{}, false
}
