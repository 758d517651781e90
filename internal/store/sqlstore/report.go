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

// CertificatesByExpiry implements store.Store: live certificates grouped
// by profile and by the first expiry window their NotAfter falls in, in
// one query that scans the (status, not_after) index range of live
// certificates once.
func (s *Store) CertificatesByExpiry(ctx context.Context, now time.Time) (_ []store.ExpiryCount, err error) {
	ctx, end := s.call(ctx, "count certificates by expiry", false)
	defer end(&err)
	var q query
	arg := func(v any) string {
		q.Args = append(q.Args, v)
		return s.d.Placeholder(len(q.Args))
	}
	var cases strings.Builder
	for _, w := range store.ExpiryWindows {
		if w.Within == 0 {
			fmt.Fprintf(&cases, " ELSE '%s'", w.Window)
			continue
		}
		fmt.Fprintf(&cases, " WHEN not_after < %s THEN '%s'", arg(micros(now.Add(w.Within))), w.Window)
	}
	q.SQL = "SELECT profile, CASE" + cases.String() + " END AS expires_within, COUNT(*) FROM certificates" +
		" WHERE status = 'active' AND not_after >= " + arg(micros(now)) +
		" GROUP BY profile, expires_within"
	return list(ctx, s, "count certificates by expiry", scanExpiryCount, q, nil)
}

func scanExpiryCount(scan scanFunc) (store.ExpiryCount, error) {
	var c store.ExpiryCount
	var w string
	if err := scan(&c.Profile, &w, &c.Count); err != nil {
		return store.ExpiryCount{}, err
	}
	c.Window = store.ExpiryWindow(w)
	return c, nil
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
		err := queryEach(ctx, tx, groupsQ.SQL, groupsQ.Args, func(scan scanFunc) error {
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
		certs, err = queryAll(ctx, tx, certsQ.SQL, certsQ.Args, scanCertificate)
		return err
	})
	if err != nil {
		return store.ExpiringReport{}, s.errorf("expiry report: %w", err)
	}
	return assembleExpiring(groups, total, certs), nil
}

// ownerExpr is a certificate's owner, or its requester for certificates
// recorded before owners were (migration 0005).
const ownerExpr = "CASE WHEN c.owner <> '' THEN c.owner ELSE c.requester END"

// ownerOf is ownerExpr in Go.
func ownerOf(c store.Certificate) string {
	if c.Owner != "" {
		return c.Owner
	}
	return c.Requester
}

// expiringQueries builds the two queries of the expiry report, to run in
// one read transaction: the groups (complete, with counts and earliest
// expiry) and the certificates they list (limited, without DER).
//
// A certificate is at risk when it is active, expires in (Now, Before],
// and no active certificate of the same identity that is still valid was
// recorded after it. The main scan uses the (status, not_after) index and
// the supersession check the (identity, not_after) index.
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
		b.cond("c.not_after > %s", micros(f.Now))
		b.cond("c.not_after <= %s", micros(f.Before))
		if f.Profile != "" {
			b.cond("c.profile = %s", f.Profile)
		}
		// "n.status || ''" keeps the status index out of the subquery:
		// without statistics SQLite chose it over (identity, not_after)
		// and scanned every live certificate for each candidate, which
		// took seconds from a thousand certificates on.
		b.cond("NOT EXISTS (SELECT 1 FROM certificates n WHERE n.identity = c.identity AND n.status || '' = 'active'"+
			" AND n.not_after > %s AND n.event_seq > c.event_seq)", micros(f.Now))
		return b
	}
	g := where()
	groups.SQL = "SELECT c.profile, " + ownerExpr + ", count(*), min(c.not_after), CAST(sum(count(*)) OVER () AS BIGINT)" +
		" FROM certificates c" + g.where() +
		fmt.Sprintf(" GROUP BY c.profile, %s ORDER BY c.profile, %s LIMIT %d", ownerExpr, ownerExpr, maxLimit)
	groups.Args = g.args
	c := where()
	certs.SQL = "SELECT " + certSelect("c.", true) + " FROM certificates c" + c.where() +
		fmt.Sprintf(" ORDER BY c.profile, %s, c.not_after, c.serial LIMIT %d", ownerExpr, n)
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
		for i < len(r.Groups) && (r.Groups[i].Profile != c.Profile || r.Groups[i].Owner != ownerOf(c)) {
			i++
		}
		if i == len(r.Groups) {
			break // the groups were cut at maxLimit
		}
		r.Groups[i].Certificates = append(r.Groups[i].Certificates, c)
	}
	return r
}
