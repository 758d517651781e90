package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// DiscoveryReport is what a scanner sends (POST /v1/discovery/reports):
// the certificates it saw and what its scan covered. Large scans are sent
// in parts of at most MaxReportSightings sightings, under one ScanID.
type DiscoveryReport struct {
	ScanID string `json:"scan_id,omitempty"`
	// Host and HostNames name the host a file scan ran on.
	Host      string              `json:"host,omitempty"`
	HostNames []string            `json:"host_names,omitempty"`
	Sightings []DiscoverySighting `json:"sightings"`
	// Scanned are the endpoint locations (tls://host:port, …) this part
	// reached: a certificate seen at one of them before and not now is
	// recorded as gone.
	Scanned []string `json:"scanned,omitempty"`
	// Complete are the directories (file://host/dir) a file scan finished:
	// what it did not see under them is recorded as gone.
	Complete []string `json:"complete,omitempty"`
}

// MaxReportSightings is how many sightings one report may carry.
const MaxReportSightings = 1000

// DiscoverySighting is one certificate chain a scanner saw.
type DiscoverySighting struct {
	// Location is tls://host:port[?sni=name] (or smtp://, imap://,
	// postgres:// after STARTTLS) or file://host/path[#entry].
	Location string `json:"location"`
	// Chain is DER, leaf first, as presented or as stored.
	Chain      [][]byte `json:"chain"`
	Address    string   `json:"address,omitempty"`
	TLSVersion uint16   `json:"tls_version,omitempty"`
	Format     string   `json:"format,omitempty"`
	// KeyPath is the private key file found to match the leaf; its
	// content is never sent.
	KeyPath          string `json:"key_path,omitempty"`
	KeyWorldReadable bool   `json:"key_world_readable,omitempty"`
}

// DiscoverySummary is what the server recorded from a report.
type DiscoverySummary struct {
	Sightings     int            `json:"sightings"`
	Certificates  int            `json:"certificates"`
	New           int            `json:"new"`
	Gone          int            `json:"gone"`
	SightingsGone int            `json:"sightings_gone"`
	Findings      map[string]int `json:"findings"`
}

// DiscoveredCertificate is a certificate found deployed.
type DiscoveredCertificate struct {
	Fingerprint string    `json:"fingerprint_sha256"`
	Serial      string    `json:"serial"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Identity    string    `json:"identity"`
	SANs        []string  `json:"sans"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	KeyType     string    `json:"key_type"`
	// Class is mica, external or self-signed.
	Class string `json:"class"`
	// Findings are what is wrong with it where it is seen now; "expired"
	// is judged at the time of asking.
	Findings  []string             `json:"findings"`
	Owner     string               `json:"owner,omitempty"`
	FirstSeen time.Time            `json:"first_seen"`
	LastSeen  time.Time            `json:"last_seen"`
	GoneAt    *time.Time           `json:"gone_at,omitempty"`
	Sightings []DiscoveredSighting `json:"sightings,omitempty"`
	PEM       string               `json:"pem,omitempty"`
}

// DiscoveredSighting is one place a discovered certificate was seen.
type DiscoveredSighting struct {
	Location  string     `json:"location"`
	Reporter  string     `json:"reporter"`
	Findings  []string   `json:"findings"`
	Detail    string     `json:"detail,omitempty"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
	GoneAt    *time.Time `json:"gone_at,omitempty"`
}

// DiscoveredList is a page of discovered certificates.
type DiscoveredList struct {
	Certificates []DiscoveredCertificate `json:"certificates"`
}

// DiscoveredFilter selects discovered certificates; zero fields select
// every one still seen.
type DiscoveredFilter struct {
	Class          string // mica, external, self-signed
	Owner          string
	Finding        string
	Identity       string
	ExpiringWithin string // e.g. "30d"
	IncludeGone    bool
	Sightings      bool
	WithPEM        bool
	Limit, Offset  int
}

// ReportDiscovery sends a scan's findings (operators and admins, and
// agents whose profile the server lets report).
func (c *Client) ReportDiscovery(ctx context.Context, r DiscoveryReport) (*DiscoverySummary, error) {
	var out DiscoverySummary
	return &out, c.do(ctx, http.MethodPost, "/v1/discovery/reports", "", r, &out)
}

// DiscoveredCertificates lists discovered certificates (auditors and up).
func (c *Client) DiscoveredCertificates(ctx context.Context, f DiscoveredFilter) ([]DiscoveredCertificate, error) {
	q := url.Values{}
	for k, v := range map[string]string{"class": f.Class, "owner": f.Owner, "finding": f.Finding, "identity": f.Identity, "expiring_within": f.ExpiringWithin} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, v := range map[string]bool{"include_gone": f.IncludeGone, "sightings": f.Sightings, "pem": f.WithPEM} {
		if v {
			q.Set(k, "true")
		}
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if f.Offset > 0 {
		q.Set("offset", fmt.Sprint(f.Offset))
	}
	var out DiscoveredList
	err := c.do(ctx, http.MethodGet, "/v1/discovery/certificates?"+q.Encode(), "", nil, &out)
	return out.Certificates, err
}

// DiscoveredGroup is the discovered certificates at risk of one class and
// owner, in the expiry report.
type DiscoveredGroup struct {
	Class          string                  `json:"class"`
	Owner          string                  `json:"owner"`
	Count          int                     `json:"count"`
	EarliestExpiry time.Time               `json:"earliest_expiry"`
	Certificates   []DiscoveredCertificate `json:"certificates"`
}

// DiscoveredExpiring is the discovered part of the expiry report:
// certificates found deployed that mica did not issue.
type DiscoveredExpiring struct {
	Total  int               `json:"total"`
	Listed int               `json:"listed"`
	Groups []DiscoveredGroup `json:"groups"`
}

// WebhookStatus is one webhook endpoint's delivery state.
type WebhookStatus struct {
	Name string `json:"name"`
	// URL is the endpoint's URL without its query.
	URL     string   `json:"url,omitempty"`
	Types   []string `json:"types,omitempty"`
	Cursor  int64    `json:"cursor"`
	LastSeq int64    `json:"last_seq"`
	// Lag is how many events of the log are after the cursor.
	Lag         int64        `json:"lag"`
	LastAttempt *time.Time   `json:"last_attempt,omitempty"`
	LastSuccess *time.Time   `json:"last_success,omitempty"`
	LastError   string       `json:"last_error,omitempty"`
	Failures    int          `json:"failures"`
	DeadLetters int          `json:"dead_letters"`
	Dead        []DeadLetter `json:"dead,omitempty"`
	// Configured is false for an endpoint the database remembers but this
	// server's config no longer names.
	Configured bool `json:"configured"`
}

// DeadLetter is an event an endpoint did not take.
type DeadLetter struct {
	Seq      int64     `json:"seq"`
	Attempts int       `json:"attempts"`
	Status   int       `json:"status,omitempty"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// WebhookList is every endpoint's state.
type WebhookList struct {
	Webhooks []WebhookStatus `json:"webhooks"`
}

// Webhooks reads the webhook endpoints' delivery state, with up to
// deadLetters dead letters each (auditors and up).
func (c *Client) Webhooks(ctx context.Context, deadLetters int) ([]WebhookStatus, error) {
	var out WebhookList
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/webhooks?dead_letters=%d", deadLetters), "", nil, &out)
	return out.Webhooks, err
}
