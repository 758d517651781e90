package telemetry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// TestDiscoveryMetrics reports discovered certificates into a real store
// and reads the gauges: counted by class and window and by finding, with
// the same series after 10 certificates as after 1,000.
func TestDiscoveryMetrics(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	reg := prometheus.NewRegistry()
	var classes, findings []string
	for _, c := range discover.Classes() {
		classes = append(classes, string(c))
	}
	for _, f := range discover.Findings() {
		findings = append(findings, string(f))
	}
	if _, err := NewDiscoveryMetrics(reg, DiscoverySources{ByExpiry: st.DiscoveredByExpiry, Findings: st.DiscoveredFindings,
		ClassNames: classes, FindingNames: findings, Every: time.Nanosecond, Clock: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	add := func(from, n int) {
		t.Helper()
		b := store.DiscoveryBatch{Reporter: "admin", ScanID: fmt.Sprint(from), At: now.Add(time.Duration(from) * time.Microsecond)}
		for i := from; i < from+n; i++ {
			der := make([]byte, 64)
			rand.Read(der)
			fp := sha256.Sum256(der)
			c := store.DiscoveredCertificate{Fingerprint: hex.EncodeToString(fp[:]), Identity: fmt.Sprintf("host%d.example.org", i),
				Class: classes[i%3], NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Duration(i%3-1) * 48 * time.Hour), DER: der}
			if i%2 == 0 {
				c.Findings = []string{string(discover.WeakKey)}
			}
			b.Certificates = append(b.Certificates, c)
			b.Sightings = append(b.Sightings, store.Sighting{Fingerprint: c.Fingerprint, Location: fmt.Sprintf("tls://10.0.%d.%d:443", i/250, i%250)})
		}
		if _, err := st.RecordDiscovery(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	add(0, 9)
	got := scrapeText(t, reg) // first: scraping adds the handler's own series
	after10 := series(t, reg)
	for k, v := range map[string]float64{
		`mica_discovered_certificates{class="mica",expires_within="expired"}`:       3,
		`mica_discovered_certificates{class="external",expires_within="24h"}`:       0,
		`mica_discovered_certificates{class="external",expires_within="7d"}`:        0,
		`mica_discovered_certificates{class="self-signed",expires_within="7d"}`:     3,
		`mica_discovered_certificates_with_finding{finding="weak-key"}`:             5,
		`mica_discovered_certificates_with_finding{finding="missing-intermediate"}`: 0,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	add(9, 991)
	if after1000 := series(t, reg); after1000 != after10 {
		t.Errorf("series grew from %d to %d with the number of certificates", after10, after1000)
	}
	t.Logf("%d series (the handler's own included) after 9 and after 1,000 discovered certificates", after10)
}
