package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// This file holds the two aggregate reads over the inventory: the expiry
// gauges (CertificatesByExpiry) and the expiry report (ExpiringReport).

// CertificatesByExpiry implements store.Store: live certificates counted
// by profile and by the first expiry window their NotAfter falls in, in
// one pass over the certificates_live index in profile order, one row per
// profile with a count per window (no sort of a million certificates by
// window). The lower bound is written with Dialect.NotIndexed for the
// reason expiringQueries gives.
func (s *Store) CertificatesByExpiry(ctx context.Context, now time.Time) (_ []store.ExpiryCount, err error) {
	ctx, end := s.call(ctx, "count certificates by expiry", false)
	defer end(&err)
	q := expiryCounts(now, &s.d)
	q.Args = s.d.planEach(q.Args)
	rows, err := list(ctx, s, "count certificates by expiry", scanProfileExpiry, q, nil)
	var out []store.ExpiryCount
	for _, r := range rows {
		out = append(out, r...)
	}
	return out, err
}

// expiryCounts is CertificatesByExpiry's query.
func expiryCounts(now time.Time, d *Dialect) query {
	var q query
	arg := func(v any) string {
		q.Args = append(q.Args, v)
		return d.Placeholder(len(q.Args))
	}
	var sums strings.Builder
	for _, w := range store.ExpiryWindows[:len(store.ExpiryWindows)-1] {
		fmt.Fprintf(&sums, ", sum(CASE WHEN not_after < %s THEN 1 ELSE 0 END)", arg(micros(now.Add(w.Within))))
	}
	q.SQL = "SELECT profile, count(*)" + sums.String() + " FROM certificates" +
		" WHERE status = 'active' AND " + d.NotIndexed + "not_after >= " + arg(micros(now)) + " GROUP BY profile ORDER BY profile"
	return q
}

// scanProfileExpiry reads one profile's row: its live certificates, then
// how many expire before each window's end (cumulative), and returns the
// non-zero count of each window.
func scanProfileExpiry(scan scanFunc) ([]store.ExpiryCount, error) {
	var profile string
	var all int64
	cum := make([]int64, len(store.ExpiryWindows)-1)
	dest := []any{&profile, &all}
	for i := range cum {
		dest = append(dest, &cum[i])
	}
	if err := scan(dest...); err != nil {
		return nil, err
	}
	cum = append(cum, all)
	var out []store.ExpiryCount
	prev := int64(0)
	for i, w := range store.ExpiryWindows {
		if n := cum[i] - prev; n > 0 {
			out = append(out, store.ExpiryCount{Profile: profile, Window: w.Window, Count: n})
		}
		prev = cum[i]
	}
	return out, nil
}

// ExpiringReport implements store.Store. Both of its queries read one
// snapshot, so the groups' counts and the listed certificates agree.
func (s *Store) ExpiringReport(ctx context.Context, f store.ExpiringFilter) (_ store.ExpiringReport, err error) {
	ctx, end := s.call(ctx, "expiry report", false)
	defer end(&err)
	groupsQ, certsQ, err := expiringQueries(f, &s.d)
	if err != nil {
		return store.ExpiringReport{}, s.errorf("expiry report: %w", err)
	}
	var (
		groups []store.ExpiringGroup
		total  int
		certs  []store.Certificate
	)
	err = s.read.InSnapshot(ctx, func(tx Conn) error {
		err := queryEach(ctx, tx, groupsQ.SQL, s.d.planEach(groupsQ.Args), func(scan scanFunc) error {
			g, t, err := scanExpiringGroup(scan)
			if err != nil {
				return err
			}
			groups, total = append(groups, g), t
			return nil
		})
		if err != nil {
			return err
		}
		certs, err = queryAll(ctx, tx, certsQ.SQL, s.d.planEach(certsQ.Args), scanCertificate)
		return err
	})
	if err != nil {
		return store.ExpiringReport{}, s.errorf("expiry report: %w", err)
	}
	return assembleExpiring(groups, total, certs), nil
}

// expiringQueries builds the two queries of the expiry report, to run in
// one read transaction: the groups (complete, with counts and earliest
// expiry) and the certificates they list (limited, without DER).
//
// A certificate is at risk when it is active, expires in (Now, Before],
// and no active certificate of the same identity that is still valid was
// recorded after it: its superseded_until (the latest expiry among those,
// kept by the schema's triggers, migration 0016) is not after Now. So
// each certificate is judged from its own row, and both queries read the
// certificates_live index (profile, owner, not_after, superseded_until of
// the active certificates) in the order they group and list by: the groups
// in one pass over it with no sort, the listed certificates up to the
// limit. The expiry bounds are written with Dialect.NotIndexed, which
// keeps SQLite's planner, which has no statistics, from trading that order
// for a range over the not_after index and a sort of every certificate in
// the window (reading each row, DER and all).
func expiringQueries(f store.ExpiringFilter, d *Dialect) (groups, certs query, err error) {
	switch {
	case f.Now.IsZero() || f.Before.IsZero():
		return query{}, query{}, errors.New("expiring filter needs Now and Before")
	case !f.Before.After(f.Now):
		return query{}, query{}, fmt.Errorf("expiring filter: Before %s is not after Now %s", f.Before, f.Now)
	}
	n, err := limit(f.Limit)
	if err != nil {
		return query{}, query{}, err
	}
	where := func() *builder {
		b := &builder{ph: d.Placeholder}
		b.conds = append(b.conds, "c.status = 'active'")
		if f.Profile != "" {
			b.cond("c.profile = %s", f.Profile)
		}
		b.cond(d.NotIndexed+"c.not_after > %s", micros(f.Now))
		b.cond(d.NotIndexed+"c.not_after <= %s", micros(f.Before))
		b.cond("c.superseded_until <= %s", micros(f.Now))
		return b
	}
	g := where()
	groups.SQL = "SELECT c.profile, c.owner, count(*), min(c.not_after), CAST(sum(count(*)) OVER () AS BIGINT)" +
		" FROM certificates c" + g.where() +
		fmt.Sprintf(" GROUP BY c.profile, c.owner ORDER BY c.profile, c.owner LIMIT %d", maxLimit)
	groups.Args = g.args
	c := where()
	certs.SQL = "SELECT " + certSelect("c.", true) + " FROM certificates c" + c.where() +
		fmt.Sprintf(" ORDER BY c.profile, c.owner, c.not_after, c.serial LIMIT %d", n)
	certs.Args = c.args
	return groups, certs, nil
}

// scanExpiringGroup reads one row of the groups query and the total count
// of certificates at risk that every row carries.
func scanExpiringGroup(scan scanFunc) (store.ExpiringGroup, int, error) {
	var (
		g            store.ExpiringGroup
		count, total int64
		earliest     int64
	)
	if err := scan(&g.Profile, &g.Owner, &count, &earliest, &total); err != nil {
		return g, 0, err
	}
	g.Count, g.EarliestExpiry = int(count), fromMicros(earliest)
	return g, int(total), nil
}

// assembleExpiring puts the listed certificates (in the groups' order)
// into their groups.
func assembleExpiring(groups []store.ExpiringGroup, total int, certs []store.Certificate) store.ExpiringReport {
	r := store.ExpiringReport{Groups: groups, Total: total, Listed: len(certs)}
	if r.Groups == nil {
		r.Groups = []store.ExpiringGroup{}
	}
	i := 0
	for _, c := range certs {
		for i < len(r.Groups) && (r.Groups[i].Profile != c.Profile || r.Groups[i].Owner != c.Owner) {
			i++
		}
		if i == len(r.Groups) {
			break // the groups were cut at maxLimit
		}
		r.Groups[i].Certificates = append(r.Groups[i].Certificates, c)
	}
	return r
}
