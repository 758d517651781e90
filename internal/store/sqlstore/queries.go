package sqlstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mica-pki/mica/internal/store"
)

// This file builds the queries whose WHERE clause depends on a filter.
// Fixed statements are in statements (store.go).

const (
	// defaultLimit applies when a filter's Limit is zero.
	defaultLimit = 1000
	// maxLimit caps any Limit; page with After (or AfterSeq) beyond it.
	maxLimit = 10000
)

// query is a SQL statement and its arguments.
type query struct {
	SQL  string
	Args []any
}

// builder collects the conditions of a WHERE clause and their arguments,
// numbering placeholders in the dialect's style.
type builder struct {
	ph    func(n int) string
	conds []string
	args  []any
}

func (b *builder) cond(format string, arg any) {
	b.args = append(b.args, arg)
	b.conds = append(b.conds, fmt.Sprintf(format, b.ph(len(b.args))))
}

func (b *builder) where() string {
	if len(b.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(b.conds, " AND ")
}

func limit(n int) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("limit %d is negative", n)
	case n == 0:
		return defaultLimit, nil
	default:
		return min(n, maxLimit), nil
	}
}

// certWhere builds the conditions of f; paged adds f.After's.
func certWhere(f store.Filter, d *Dialect, paged bool) (*builder, error) {
	// Past a position at or after Now, the active filter's lower bound
	// follows from the position's, and before Now the position's from the
	// bound: only one of them is written, as SQLite seeks the index with
	// one lower bound and filters by the other, which would read every
	// row from the first live certificate to the page.
	activeFrom := f.Status == store.StatusActive && paged && !f.After.IsZero()
	if activeFrom && f.After.NotAfter.Before(f.Now) {
		paged = false
	}
	b := &builder{ph: d.Placeholder}
	if f.Identity != "" {
		b.cond("identity = %s", f.Identity)
	}
	if f.Profile != "" {
		// An identity has a handful of certificates and a profile may
		// have most of them: with both, SQLite must read the identity's
		// index, not every certificate of the profile after the page.
		col := "profile"
		if f.Identity != "" {
			col = d.NotIndexed + col
		}
		b.cond(col+" = %s", f.Profile)
	}
	if f.Owner != "" {
		b.cond("owner = %s", f.Owner)
	}
	switch f.Status {
	case "":
	case store.StatusActive, store.StatusExpired:
		if f.Now.IsZero() {
			return nil, fmt.Errorf("filter status %q needs Filter.Now: set it to the time to judge expiry at", f.Status)
		}
		b.conds = append(b.conds, "status = 'active'")
		if f.Status == store.StatusActive {
			if !activeFrom || !paged {
				b.cond("not_after >= %s", micros(f.Now))
			}
		} else {
			b.cond("not_after < %s", micros(f.Now))
		}
	case store.StatusRevoked:
		b.conds = append(b.conds, "status = 'revoked'")
	default:
		return nil, fmt.Errorf("filter status %q is unknown: use active, expired or revoked", f.Status)
	}
	if !f.ExpiresBefore.IsZero() {
		b.cond("not_after < %s", micros(f.ExpiresBefore))
	}
	if f.Offset < 0 {
		return nil, errors.New("filter offset is negative")
	}
	if paged {
		after(b, f.After)
	}
	return b, nil
}

// after adds the keyset condition of f.After: the rows after it in the
// order (not_after, serial), which every list index ends with, so that
// the page starts with a search rather than a count of rows to skip.
func after(b *builder, p store.Position) {
	if p.IsZero() {
		return
	}
	b.args = append(b.args, micros(p.NotAfter), p.Serial)
	b.conds = append(b.conds, fmt.Sprintf("(not_after, serial) > (%s, %s)", b.ph(len(b.args)-1), b.ph(len(b.args))))
}

// listCertificates selects certificates matching f, ordered by NotAfter
// then serial, after f.After, limited and offset as f says.
func listCertificates(f store.Filter, d *Dialect) (query, error) {
	b, err := certWhere(f, d, true)
	if err != nil {
		return query{}, err
	}
	n, err := limit(f.Limit)
	if err != nil {
		return query{}, err
	}
	if f.Limit == maxLimit+1 {
		// A full page and one row more, to tell whether another follows.
		n = f.Limit
	}
	sql := "SELECT " + certSelect("", false) + " FROM certificates" + b.where() +
		fmt.Sprintf(" ORDER BY not_after, serial LIMIT %d OFFSET %d", n, f.Offset)
	return query{SQL: sql, Args: b.args}, nil
}

// countCertificates counts every certificate matching f; After, Limit and
// Offset are ignored so the count can size pagination.
func countCertificates(f store.Filter, d *Dialect) (query, error) {
	b, err := certWhere(f, d, false)
	if err != nil {
		return query{}, err
	}
	return query{SQL: "SELECT count(*) FROM certificates" + b.where(), Args: b.args}, nil
}

// events selects events matching f, oldest first.
func events(f store.EventFilter, d *Dialect) (query, error) {
	b := &builder{ph: d.Placeholder}
	if f.AfterSeq > 0 {
		b.cond("seq > %s", f.AfterSeq)
	}
	if len(f.Actions) > 0 {
		acts := f.Actions
		if f.Action != "" {
			acts = append([]store.Action(nil), acts...)
			acts = append(acts, f.Action)
		}
		var ors []string
		for _, a := range acts {
			b.args = append(b.args, string(a))
			ors = append(ors, "action = "+b.ph(len(b.args)))
		}
		b.conds = append(b.conds, "("+strings.Join(ors, " OR ")+")")
	} else if f.Action != "" {
		b.cond("action = %s", string(f.Action))
	}
	if f.Identity != "" {
		b.cond("identity = %s", f.Identity)
	}
	if !f.Since.IsZero() {
		b.cond("at >= %s", micros(f.Since))
	}
	n, err := limit(f.Limit)
	if err != nil {
		return query{}, err
	}
	sql := "SELECT " + eventSelect + " FROM events" + b.where() + fmt.Sprintf(" ORDER BY seq LIMIT %d", n)
	return query{SQL: sql, Args: b.args}, nil
}

// leafQuery selects cols of the events with leaf_index >= start, in leaf
// order.
func leafQuery(cols string, start int64, n int, d *Dialect) (query, error) {
	if start < 0 {
		return query{}, fmt.Errorf("leaf index %d is negative", start)
	}
	n, err := limit(n)
	if err != nil {
		return query{}, err
	}
	return query{
		SQL:  fmt.Sprintf("SELECT %s FROM events WHERE leaf_index >= %s ORDER BY leaf_index LIMIT %d", cols, d.Placeholder(1), n),
		Args: []any{start},
	}, nil
}

// checkpoints selects checkpoints with size > afterSize, smallest first.
func checkpoints(afterSize int64, n int, d *Dialect) (query, error) {
	n, err := limit(n)
	if err != nil {
		return query{}, err
	}
	return query{
		SQL:  fmt.Sprintf("SELECT %s FROM checkpoints WHERE size > %s ORDER BY size LIMIT %d", checkpointSelect, d.Placeholder(1), n),
		Args: []any{afterSize},
	}, nil
}

// revokedCertificates selects the revoked certificates of issuer (any
// when empty) with NotAfter at or after validAt.
func revokedCertificates(issuer string, validAt int64, d *Dialect) query {
	b := &builder{ph: d.Placeholder}
	b.conds = append(b.conds, "status = 'revoked'")
	b.cond("not_after >= %s", validAt)
	if issuer != "" {
		// Not from certificates_issuer, which would read every certificate
		// of the issuer to find the revoked ones: certificates_revoked
		// holds the issuer and covers the query (migration 0016).
		b.cond(d.NotIndexed+"issuer = %s", issuer)
	}
	return query{SQL: "SELECT " + revokedSelect + " FROM certificates" + b.where(), Args: b.args}
}

// NextLeafIndex is the index the next audit leaf gets; run it inside the
// batch transaction, under the engine's write serialisation.
const NextLeafIndex = "SELECT " + NextLeafIndexExpr

// NextLeafIndexExpr is NextLeafIndex as a scalar expression, for use
// inside an INSERT: one after the last leaf, and never below the size of
// the largest signed checkpoint. The two are the same unless leaves a
// checkpoint covered were deleted; new events then leave the hole
// visible, so that a verifier names the first deleted leaf, instead of
// taking the deleted leaves' indexes and hiding where the deletion began.
// Each maximum is written as ORDER BY … LIMIT 1 rather than max(), which
// SQLite answers by scanning the table once max is wrapped in an
// expression; this form reads one entry at the end of an index.
const NextLeafIndexExpr = "(SELECT max(n) FROM (" +
	"SELECT (SELECT leaf_index + 1 FROM events ORDER BY leaf_index DESC LIMIT 1) AS n" +
	" UNION ALL SELECT (SELECT size FROM checkpoints ORDER BY size DESC LIMIT 1)" +
	" UNION ALL SELECT 0) AS next_leaf)"

// ListCertificatesQuery is the statement and arguments ListCertificates
// runs for f in d's style, for an engine's tests to check the plan its
// planner makes of it.
func ListCertificatesQuery(f store.Filter, d *Dialect) (string, []any, error) {
	q, err := listCertificates(f, d)
	return q.SQL, q.Args, err
}
