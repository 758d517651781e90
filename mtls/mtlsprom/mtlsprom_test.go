package mtlsprom_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
	"github.com/mica-pki/mica/revocation"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := mtlsprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mtlsprom.New(reg); err == nil {
		t.Error("a second Metrics registered in the same registry")
	}
	// Every side and reason starts at zero: 3 sides × every reason.
	if n := testutil.CollectAndCount(reg, "mica_mtls_handshakes_total"); n != 3*len(mtls.Reasons()) {
		t.Errorf("%d handshake series, want %d", n, 3*len(mtls.Reasons()))
	}
	m.Verified(mtls.SideServer, mtls.ReasonRevokedFeed)
	m.Verified("no such side", mtls.ReasonOK) // ignored, not a new series
	m.ConnectionClosed(mtls.ReasonDenied)
	m.RequestRefused(mtls.ReasonRevokedCRL)
	var set revocation.Set
	set.Apply(revocation.Event{Seq: 42, Kind: revocation.KindRevoked, Serial: "ab"})
	m.WatchRevocations(&set, nil)
	want := `
# HELP mica_mtls_connections_closed_total Live connections closed because their peer was revoked or denied after the handshake.
# TYPE mica_mtls_connections_closed_total counter
mica_mtls_connections_closed_total{reason="identity_denied"} 1
# HELP mica_mtls_requests_refused_total HTTP requests refused by the mtls middleware because their client is refused now.
# TYPE mica_mtls_requests_refused_total counter
mica_mtls_requests_refused_total{reason="revoked_crl"} 1
# HELP mica_mtls_revocations_seq Sequence number of the last revocation feed change applied to the set the handshakes consult.
# TYPE mica_mtls_revocations_seq gauge
mica_mtls_revocations_seq 42
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "mica_mtls_connections_closed_total",
		"mica_mtls_requests_refused_total", "mica_mtls_revocations_seq"); err != nil {
		t.Error(err)
	}
	var nilM *mtlsprom.Metrics
	nilM.Verified(mtls.SideClient, mtls.ReasonOK) // a nil Metrics is a no-op, not a panic
}
