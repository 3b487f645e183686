//go:build tools

package tools

import (
	_ "github.com/cilium/ebpf"
	_ "github.com/cilium/ebpf/btf"
	_ "github.com/cilium/ebpf/link"
	_ "github.com/cilium/ebpf/rlimit"
	_ "github.com/emiago/sipgo"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/gaissmai/bart"
	_ "github.com/google/nftables"
	_ "github.com/google/nftables/binaryutil"
	_ "github.com/google/nftables/expr"
	_ "github.com/hashicorp/golang-lru/v2"
	_ "github.com/hashicorp/golang-lru/v2/expirable"
	_ "github.com/hashicorp/golang-lru/v2/simplelru"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/pelletier/go-toml/v2/unstable"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/collectors"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "golang.org/x/net/ipv4"
	_ "golang.org/x/net/ipv6"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/time/rate"
)
