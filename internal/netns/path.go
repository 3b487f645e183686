package netns

import (
	"path/filepath"
	"strings"
)

// RunDir is where `ip netns add` mounts named namespaces (iproute2's
// NETNS_RUN_DIR).
const RunDir = "/var/run/netns"

// Path returns the file of the network namespace ns: a name made by
// `ip netns add` maps to RunDir/NAME, anything containing a '/' (such as
// /proc/PID/ns/net) is returned as it is, and "" stays "".
func Path(ns string) string {
	if ns == "" || strings.ContainsRune(ns, '/') {
		return ns
	}
	return filepath.Join(RunDir, ns)
}
