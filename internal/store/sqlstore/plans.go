package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// This file lets tests see how the database means to run the queries that
// must stay fast with a million certificates: a plan is checked for its
// shape (EXPLAIN), which a timing on a small database cannot show.

// Cost is what a query may cost as the inventory grows.
type Cost string

const (
	// CostPage: bounded by the rows it returns (a page, a lookup), however
	// large the inventory.
	CostPage Cost = "page"
	// CostPass: one pass over an index of the rows it is about (the live
	// or the revoked certificates), nothing searched or sorted per row.
	CostPass Cost = "pass"
)

// Plan is how the database means to run one of the store's queries.
type Plan struct {
	Name string
	Cost Cost
	// Covering: the query reads only what an index holds, never the
	// certificate rows (a pass over a million rows of a kilobyte each
	// would read a gigabyte).
	Covering bool
	SQL      string
	// Lines is the engine's EXPLAIN, one step a line, indented by depth
	// (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN).
	Lines []string
}

// PlanSample names values of a loaded store for the plans' parameters: an
// identity, profile, owner, serial and issuer that exist, and the time the
// inventory is judged at.
type PlanSample struct {
	Identity, Profile, Owner, Serial, Issuer string
	Now                                      time.Time
}

// Plans explains the queries that must stay fast with a large inventory,
// as the store builds them, with sample's values.
func (s *Store) Plans(ctx context.Context, sample PlanSample) ([]Plan, error) {
	if s.d.Explain == nil {
		return nil, s.errorf("plans: the engine cannot explain its queries")
	}
	now := sample.Now
	deep := store.Position{NotAfter: now.Add(24 * time.Hour), Serial: sample.Serial}
	type named struct {
		name     string
		cost     Cost
		covering bool
		q        query
		err      error
	}
	var qs []named
	add := func(name string, cost Cost, q query, err error) {
		qs = append(qs, named{name, cost, false, q, err})
	}
	covering := func(name string, q query, err error) {
		qs = append(qs, named{name, CostPass, true, q, err})
	}
	for _, l := range []struct {
		name string
		f    store.Filter
	}{
		{"list", store.Filter{}},
		{"list by identity", store.Filter{Identity: sample.Identity}},
		{"list by profile", store.Filter{Profile: sample.Profile}},
		{"list by owner", store.Filter{Owner: sample.Owner}},
		{"list active", store.Filter{Status: store.StatusActive, Now: now}},
		{"list revoked", store.Filter{Status: store.StatusRevoked}},
		{"list expired", store.Filter{Status: store.StatusExpired, Now: now}},
		{"list expiring within 24h", store.Filter{ExpiresBefore: now.Add(24 * time.Hour)}},
		{"list revoked of a profile", store.Filter{Profile: sample.Profile, Status: store.StatusRevoked}},
		{"list active of an owner", store.Filter{Owner: sample.Owner, Status: store.StatusActive, Now: now}},
		{"list, a deep page", store.Filter{After: deep}},
		{"list by profile, a deep page", store.Filter{Profile: sample.Profile, After: deep}},
		{"list active, a deep page", store.Filter{Status: store.StatusActive, Now: now, After: deep}},
		{"list expired, a deep page", store.Filter{Status: store.StatusExpired, Now: now, After: store.Position{NotAfter: now.Add(-time.Hour)}}},
		{"list expiring within 24h, a deep page", store.Filter{ExpiresBefore: now.Add(24 * time.Hour), After: store.Position{NotAfter: now.Add(time.Hour)}}},
		{"list revoked, a deep page", store.Filter{Status: store.StatusRevoked, After: deep}},
		// The filters of GET /v1/certificates read after a cursor.
		{"list by identity, a deep page", store.Filter{Identity: sample.Identity, After: deep}},
		{"list active of an identity, a deep page", store.Filter{Identity: sample.Identity, Status: store.StatusActive, Now: now, After: deep}},
		{"list by identity and profile, a deep page", store.Filter{Identity: sample.Identity, Profile: sample.Profile, After: deep}},
		{"list active of a profile, a deep page", store.Filter{Profile: sample.Profile, Status: store.StatusActive, Now: now, After: deep}},
		{"list revoked of a profile, a deep page", store.Filter{Profile: sample.Profile, Status: store.StatusRevoked, After: deep}},
		{"list expired of a profile, a deep page", store.Filter{Profile: sample.Profile, Status: store.StatusExpired, Now: now, After: store.Position{NotAfter: now.Add(-time.Hour)}}},
		{"list active expiring within 24h, a deep page", store.Filter{Status: store.StatusActive, Now: now, ExpiresBefore: now.Add(24 * time.Hour), After: store.Position{NotAfter: now.Add(time.Hour)}}},
	} {
		l.f.Limit = 1000
		q, err := listCertificates(l.f, &s.d)
		add(l.name, CostPage, q, err)
	}
	report := store.ExpiringFilter{Now: now, Before: now.Add(30 * 24 * time.Hour)}
	groups, certs, err := expiringQueries(report, &s.d)
	covering("expiry report: groups", groups, err)
	add("expiry report: certificates", CostPage, certs, err)
	report.Profile = sample.Profile
	groups, certs, err = expiringQueries(report, &s.d)
	covering("expiry report of a profile: groups", groups, err)
	add("expiry report of a profile: certificates", CostPage, certs, err)
	covering("inventory gauges", expiryCounts(now, &s.d), nil)
	covering("CRL of an issuer", revokedCertificates(sample.Issuer, micros(now), &s.d), nil)
	covering("revocation feed snapshot", revokedCertificates("", micros(now), &s.d), nil)
	notices, err := noticesQuery(store.NoticeFilter{Now: now, Within: 7 * 24 * time.Hour, LifeDivisor: 3, Limit: 100}, &s.d)
	add("expiry notices", CostPass, notices, err)
	add("certificate by serial (OCSP)", CostPage, query{SQL: s.stmt.certBySerial, Args: []any{sample.Serial}}, nil)
	add("certificate by fingerprint", CostPage, query{SQL: s.stmt.certByFingerprint, Args: []any{sample.Serial}}, nil)
	leaves, err := leafQuery(eventSelect, 1000, 10000, &s.d)
	add("audit leaves", CostPage, leaves, err)
	hashes, err := leafQuery("leaf_hash", 1000, 10000, &s.d)
	add("audit leaf hashes", CostPage, hashes, err)
	feed, err := events(store.EventFilter{AfterSeq: 1000, Actions: []store.Action{store.ActionCertRevoked, store.ActionIdentityDenied, store.ActionIdentityAllowed}, Limit: 1000}, &s.d)
	// Bounded by the revocations after the subscriber's position.
	add("revocation feed catch-up", CostPass, feed, err)
	add("last event", CostPage, query{SQL: s.stmt.lastEventSeq}, nil)

	out := make([]Plan, 0, len(qs))
	for _, n := range qs {
		if n.err != nil {
			return nil, s.errorf("plans: %s: %w", n.name, n.err)
		}
		lines, err := s.d.Explain(ctx, s.read, n.q.SQL, n.q.Args)
		if err != nil {
			return nil, s.errorf("plans: explain %s: %w", n.name, err)
		}
		out = append(out, Plan{Name: n.name, Cost: n.cost, Covering: n.covering, SQL: n.q.SQL, Lines: lines})
	}
	return out, nil
}

// ExplainLines runs prefix+query on c and returns its one-column output
// (PostgreSQL's EXPLAIN), for a Dialect's Explain.
func ExplainLines(ctx context.Context, c Conn, prefix, query string, args []any) ([]string, error) {
	return queryAll(ctx, c, prefix+query, args, scanOne[string])
}

// ExplainTree runs SQLite's EXPLAIN QUERY PLAN on c and returns its steps
// indented by depth, for a Dialect's Explain.
func ExplainTree(ctx context.Context, c Conn, query string, args []any) ([]string, error) {
	type step struct {
		id, parent int64
		detail     string
	}
	steps, err := queryAll(ctx, c, "EXPLAIN QUERY PLAN "+query, args, func(scan scanFunc) (step, error) {
		var st step
		var unused int64
		err := scan(&st.id, &st.parent, &unused, &st.detail)
		return st, err
	})
	if err != nil {
		return nil, err
	}
	depth := map[int64]int{0: -1}
	out := make([]string, 0, len(steps))
	for _, st := range steps {
		d := depth[st.parent] + 1
		depth[st.id] = d
		out = append(out, fmt.Sprintf("%*s%s", 2*d, "", st.detail))
	}
	return out, nil
}
