package telemetry

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/feed"
)

// TestRequestSeriesStartAtZero: before anything is issued, every door ×
// profile × outcome is exported at 0, so increase() sees the first renewal
// of a profile and the error ratio has a denominator from the start.
func TestRequestSeriesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewIssuanceMetrics(reg, []string{"service", "web"}); err != nil {
		t.Fatal(err)
	}
	got := scrapeText(t, reg)
	n := 0
	for _, door := range []string{"token", "renew", "acme", "internal"} {
		for _, profile := range []string{"service", "web", ProfileOther, ProfileNone} {
			for _, outcome := range []string{"issued", "refused", "error"} {
				sample := `mica_issuance_requests_total{door="` + door + `",outcome="` + outcome + `",profile="` + profile + `"}`
				if v, ok := got[sample]; !ok || v != 0 {
					t.Errorf("%s = %v (present %v), want 0 from the start", sample, v, ok)
				}
				n++
			}
		}
	}
	if n != 48 {
		t.Fatalf("checked %d series", n)
	}
}

// TestHTTPMetrics: requests are counted by the mux pattern that matched
// them and the status code, refusals before any handler logic included;
// unmatched paths do not mint route labels.
func TestHTTPMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewHTTPMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/certificates", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad-csr", http.StatusBadRequest)
	})
	mux.HandleFunc("GET /v1/certificates/{serial}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok")) // implicit 200
	})
	srv := httptest.NewServer(m.Wrap("api", mux))
	defer srv.Close()
	for range 3 {
		resp, err := http.Post(srv.URL+"/v1/certificates", "application/json", strings.NewReader("{"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, p := range []string{"/v1/certificates/01", "/v1/certificates/02", "/nowhere/a", "/nowhere/b"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := scrapeText(t, reg)
	for sample, want := range map[string]float64{
		`mica_http_requests_total{code="400",listener="api",route="POST /v1/certificates"}`:         3,
		`mica_http_requests_total{code="200",listener="api",route="GET /v1/certificates/{serial}"}`: 2,
		`mica_http_requests_total{code="404",listener="api",route="other"}`:                         2,
		`mica_http_request_duration_seconds_count{listener="api",route="POST /v1/certificates"}`:    3,
	} {
		if got[sample] != want {
			t.Errorf("%s = %v, want %v", sample, got[sample], want)
		}
	}
	for k := range got {
		if strings.Contains(k, "nowhere") || strings.Contains(k, "/01") {
			t.Errorf("a request path became a label: %s", k)
		}
	}
}

// TestFeedClientMetrics: connected follows the subscriber's hooks, every
// ended attempt is counted, and a cut is logged once however many
// reconnections fail after it.
func TestFeedClientMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	m, err := NewFeedClientMetrics(reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.Connected()
	if got := scrapeText(t, reg)["mica_revocation_feed_connected"]; got != 1 {
		t.Errorf("connected = %v after OnConnect, want 1", got)
	}
	for range 5 {
		m.Disconnected(errors.New("revocation: the server closed the feed"))
	}
	got := scrapeText(t, reg)
	if got["mica_revocation_feed_connected"] != 0 || got["mica_revocation_feed_disconnects_total"] != 5 {
		t.Errorf("after a cut and 4 failed reconnections: %v", got)
	}
	if n := strings.Count(logs.String(), "revocation feed cut"); n != 1 {
		t.Errorf("the cut was logged %d times, want once:\n%s", n, logs.String())
	}
	m.Connected()
	if !strings.Contains(logs.String(), "revocation feed connected") {
		t.Errorf("the reconnection was not logged:\n%s", logs.String())
	}
}

// TestFeedAndRootCRLGauges: the feed's sequence number, unread bytes and
// blocked writes, and the root CRL's freshness are exported; the root
// CRL's series are absent while none is published.
func TestFeedAndRootCRLGauges(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	published := true
	reg := prometheus.NewRegistry()
	if _, err := NewServerMetrics(reg, Sources{Clock: func() time.Time { return now },
		Feed: func() feed.Stats {
			return feed.Stats{Subscribers: 2, MaxLag: 40, MaxUnreadBytes: 9000, MaxWriteBlocked: 3 * time.Second, Seq: 1234}
		},
		RootCRL: func() (time.Time, time.Time, bool) {
			return now.Add(-24 * time.Hour), now.Add(-time.Hour), published
		},
	}); err != nil {
		t.Fatal(err)
	}
	got := scrapeText(t, reg)
	for s, v := range map[string]float64{
		"mica_feed_seq": 1234, "mica_feed_lag_events": 40, "mica_feed_unread_bytes": 9000, "mica_feed_write_blocked_seconds": 3,
		"mica_root_crl_age_seconds": 86400, "mica_root_crl_next_update_seconds": -3600,
	} {
		if got[s] != v {
			t.Errorf("%s = %v, want %v", s, got[s], v)
		}
	}
	published = false
	if _, ok := scrapeText(t, reg)["mica_root_crl_next_update_seconds"]; ok {
		t.Error("root CRL freshness exported while none is published")
	}
}
