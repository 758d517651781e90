package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ExpiringReport is the expiry report (GET /v1/reports/expiring, admins):
// the certificates that expire within the window and that nothing has
// replaced yet (active, not revoked, no newer certificate of the same
// identity), grouped by profile and owner.
type ExpiringReport struct {
	Within         string    `json:"within"`
	Profile        string    `json:"profile,omitempty"`
	GeneratedAt    time.Time `json:"generated_at"`
	ExpiringBefore time.Time `json:"expiring_before"`
	// Total is how many certificates are at risk; Listed how many the
	// groups list (fewer when the limit cut the list; counts stay whole).
	Total  int             `json:"total"`
	Listed int             `json:"listed"`
	Groups []ExpiringGroup `json:"groups"`
	// Discovered are certificates found deployed that mica did not issue,
	// still seen and expiring within the window.
	Discovered *DiscoveredExpiring `json:"discovered,omitempty"`
}

// ExpiringGroup is the certificates at risk of one profile and owner. The
// owner is the certificates' requester: the token (token:<id>) for a first
// enrollment, the identity itself for a renewal over mTLS, acme:<account
// URL> for ACME.
type ExpiringGroup struct {
	Profile        string        `json:"profile"`
	Owner          string        `json:"owner"`
	Count          int           `json:"count"`
	EarliestExpiry time.Time     `json:"earliest_expiry"`
	Certificates   []Certificate `json:"certificates"`
}

// ExpiringQuery selects the report: Within like "30d", "12h" or "90m"
// (default 30d), optionally one profile, and at most Limit certificates
// listed (default 1000).
type ExpiringQuery struct {
	Within  string
	Profile string
	Limit   int
}

// ExpiringReport fetches the expiry report (admins).
func (c *Client) ExpiringReport(ctx context.Context, q ExpiringQuery) (*ExpiringReport, error) {
	v := url.Values{}
	if q.Within != "" {
		v.Set("within", q.Within)
	}
	if q.Profile != "" {
		v.Set("profile", q.Profile)
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	var out ExpiringReport
	return &out, c.do(ctx, http.MethodGet, "/v1/reports/expiring?"+v.Encode(), "", nil, &out)
}
