package sbc

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/certgen"
)

// TestCertificateExpiryWarned: a certificate that ends within 14 days is
// logged at WARN when loaded, and its days to expiry are a gauge; one
// with months left is not warned about.
func TestCertificateExpiryWarned(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("ca", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for name, end := range map[string]time.Time{"soon": now.Add(3*24*time.Hour + time.Hour), "later": now.Add(90 * 24 * time.Hour)} {
		l, err := ca.Issue(certgen.LeafOptions{CN: name, IsServer: true, NotAfter: end})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WriteFiles(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	m := newMetrics()
	f := newTLSFiles(slog.New(slog.NewTextHandler(&logs, nil)), m)
	for _, name := range []string{"soon", "later"} {
		if _, err := f.cert(dir+"/"+name+".pem", dir+"/"+name+"-key.pem"); err != nil {
			t.Fatal(err)
		}
	}
	if d := testutil.ToFloat64(m.TLSExpiry.WithLabelValues(dir + "/soon.pem")); d < 3 || d > 3.1 {
		t.Errorf("days to expiry of soon.pem = %v, want about 3", d)
	}
	if d := testutil.ToFloat64(m.TLSExpiry.WithLabelValues(dir + "/later.pem")); d < 89.9 || d > 90 {
		t.Errorf("days to expiry of later.pem = %v, want about 90", d)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "soon.pem") || !strings.Contains(out, "days_left=3") {
		t.Errorf("no expiry WARN for soon.pem:\n%s", out)
	}
	if strings.Contains(out, "later.pem") {
		t.Errorf("a certificate with 90 days left was warned about:\n%s", out)
	}
	// Polling repeats the warning once a day, not at every poll.
	logs.Reset()
	f.refresh(now.Add(time.Minute))
	if strings.Contains(logs.String(), "expires soon") {
		t.Errorf("warned again within the day:\n%s", logs.String())
	}
	f.refresh(now.Add(25 * time.Hour))
	if !strings.Contains(logs.String(), "expires soon") {
		t.Errorf("not warned again a day later:\n%s", logs.String())
	}
}
