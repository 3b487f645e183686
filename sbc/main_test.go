package sbc

import (
	"os"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestMain turns sipgo's message hooks on before any test starts a
// transport: sip.SIPDebug is a plain global that its transports read
// without synchronisation, so it may only be written while nothing runs.
// New sets it when a policy enables [hep] (hep.go), which a deployment
// does before its transports start; here several tests start SBCs, UAs
// and backends, so it is set once, first. With no HEP exporter the hook
// returns at once.
func TestMain(m *testing.M) {
	sip.SIPDebug = true
	os.Exit(m.Run())
}
