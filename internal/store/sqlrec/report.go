package sqlrec

import (
	"errors"
	"fmt"

	"github.com/mica-pki/mica/internal/store"
)

// ExpiringQueries are the two queries of the expiry report, to run in one
// read transaction: the groups (complete, with counts and earliest expiry)
// and the certificates they list (limited).
type ExpiringQueries struct {
	Groups, Certificates Query
}

// expiringColumns are CertColumns without the DER, which a report does
// not need: NULL reads back as an empty DER.
const expiringColumns = "c.serial, c.fingerprint, c.identity, c.sans, c.profile, c.requester, c.source_addr, " +
	"c.not_before, c.not_after, c.issuer, c.status, c.revoked_at, c.revocation_reason, c.renewed_from, NULL, c.event_seq, c.owner"

// ownerExpr is a certificate's owner, or its requester for certificates
// recorded before owners were (migration 0005).
const ownerExpr = "CASE WHEN c.owner <> '' THEN c.owner ELSE c.requester END"

// OwnerOf is ownerExpr in Go.
func OwnerOf(c store.Certificate) string {
	if c.Owner != "" {
		return c.Owner
	}
	return c.Requester
}

// ExpiringReport builds the queries of store.ExpiringReport. A certificate
// is at risk when it is active, expires in (Now, Before], and no active
// certificate of the same identity that is still valid was recorded after
// it. The main scan uses the (status, not_after) index and the supersession
// check the (identity, not_after) index.
func ExpiringReport(f store.ExpiringFilter, ph Placeholder) (ExpiringQueries, error) {
	switch {
	case f.Now.IsZero() || f.Before.IsZero():
		return ExpiringQueries{}, errors.New("expiring filter needs Now and Before")
	case !f.Before.After(f.Now):
		return ExpiringQueries{}, fmt.Errorf("expiring filter: Before %s is not after Now %s", f.Before, f.Now)
	}
	n, err := limit(f.Limit)
	if err != nil {
		return ExpiringQueries{}, err
	}
	where := func() *builder {
		b := &builder{ph: ph}
		b.conds = append(b.conds, "c.status = 'active'")
		b.cond("c.not_after > %s", Micros(f.Now))
		b.cond("c.not_after <= %s", Micros(f.Before))
		if f.Profile != "" {
			b.cond("c.profile = %s", f.Profile)
		}
		b.cond("NOT EXISTS (SELECT 1 FROM certificates n WHERE n.identity = c.identity AND n.status = 'active'"+
			" AND n.not_after > %s AND n.event_seq > c.event_seq)", Micros(f.Now))
		return b
	}
	g := where()
	groups := "SELECT c.profile, " + ownerExpr + ", count(*), min(c.not_after), CAST(sum(count(*)) OVER () AS BIGINT)" +
		" FROM certificates c" + g.where() +
		fmt.Sprintf(" GROUP BY c.profile, %s ORDER BY c.profile, %s LIMIT %d", ownerExpr, ownerExpr, MaxLimit)
	c := where()
	certs := "SELECT " + expiringColumns + " FROM certificates c" + c.where() +
		fmt.Sprintf(" ORDER BY c.profile, %s, c.not_after, c.serial LIMIT %d", ownerExpr, n)
	return ExpiringQueries{Groups: Query{SQL: groups, Args: g.args}, Certificates: Query{SQL: certs, Args: c.args}}, nil
}

// ScanExpiringGroup reads one row of ExpiringQueries.Groups and the total
// count of certificates at risk that every row carries.
func ScanExpiringGroup(scan func(dest ...any) error) (store.ExpiringGroup, int, error) {
	var (
		g            store.ExpiringGroup
		count, total int64
		earliest     int64
	)
	if err := scan(&g.Profile, &g.Owner, &count, &earliest, &total); err != nil {
		return g, 0, err
	}
	g.Count, g.EarliestExpiry = int(count), FromMicros(earliest)
	return g, int(total), nil
}

// AssembleExpiring puts the listed certificates (in the groups' order) into
// their groups.
func AssembleExpiring(groups []store.ExpiringGroup, total int, certs []store.Certificate) store.ExpiringReport {
	r := store.ExpiringReport{Groups: groups, Total: total, Listed: len(certs)}
	if r.Groups == nil {
		r.Groups = []store.ExpiringGroup{}
	}
	i := 0
	for _, c := range certs {
		for i < len(r.Groups) && (r.Groups[i].Profile != c.Profile || r.Groups[i].Owner != OwnerOf(c)) {
			i++
		}
		if i == len(r.Groups) {
			break // the groups were cut at MaxLimit
		}
		r.Groups[i].Certificates = append(r.Groups[i].Certificates, c)
	}
	return r
}
