package sbc

import (
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// relayRegister and the registration cache: registrar.go, regcache.go.

// registerAllowed checks "no public extensions": REGISTER only from trunks
// that allow it and only for their configured domains.
func registerAllowed(t *policy.Trunk, req *sip.Request) bool {
	if t == nil || !t.AllowRegister {
		return false
	}
	host := strings.Trim(req.Recipient.Host, "[]")
	for _, d := range t.RegisterDomains {
		if strings.EqualFold(d, host) {
			return true
		}
	}
	return false
}
