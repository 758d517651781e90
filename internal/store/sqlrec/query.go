package sqlrec

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mica-pki/mica/internal/store"
)

const (
	// DefaultLimit applies when a filter's Limit is zero.
	DefaultLimit = 1000
	// MaxLimit caps any Limit; page with Offset or AfterSeq beyond it.
	MaxLimit = 10000
)

// Placeholder renders the n-th (1-based) query parameter: "?" or "$n".
type Placeholder func(n int) string

// Query is a SQL fragment and its arguments.
type Query struct {
	SQL  string
	Args []any
}

// Action is store.Action, named here for the Actions filter.
type Action = store.Action

type builder struct {
	ph    Placeholder
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
		return DefaultLimit, nil
	default:
		return min(n, MaxLimit), nil
	}
}

func certWhere(f store.Filter, ph Placeholder) (*builder, error) {
	b := &builder{ph: ph}
	if f.Identity != "" {
		b.cond("identity = %s", f.Identity)
	}
	if f.Profile != "" {
		b.cond("profile = %s", f.Profile)
	}
	switch f.Status {
	case "":
	case store.StatusActive, store.StatusExpired:
		if f.Now.IsZero() {
			return nil, fmt.Errorf("filter status %q needs Filter.Now: set it to the time to judge expiry at", f.Status)
		}
		b.conds = append(b.conds, "status = 'active'")
		if f.Status == store.StatusActive {
			b.cond("not_after >= %s", Micros(f.Now))
		} else {
			b.cond("not_after < %s", Micros(f.Now))
		}
	case store.StatusRevoked:
		b.conds = append(b.conds, "status = 'revoked'")
	default:
		return nil, fmt.Errorf("filter status %q is unknown: use active, expired or revoked", f.Status)
	}
	if !f.ExpiresBefore.IsZero() {
		b.cond("not_after < %s", Micros(f.ExpiresBefore))
	}
	if f.Offset < 0 {
		return nil, errors.New("filter offset is negative")
	}
	return b, nil
}

// ListCertificates selects certificates matching f, ordered by NotAfter
// then serial, limited and offset as f says.
func ListCertificates(f store.Filter, ph Placeholder) (Query, error) {
	b, err := certWhere(f, ph)
	if err != nil {
		return Query{}, err
	}
	n, err := limit(f.Limit)
	if err != nil {
		return Query{}, err
	}
	sql := "SELECT " + CertColumns + " FROM certificates" + b.where() +
		fmt.Sprintf(" ORDER BY not_after, serial LIMIT %d OFFSET %d", n, f.Offset)
	return Query{SQL: sql, Args: b.args}, nil
}

// CountCertificates counts every certificate matching f; Limit and Offset
// are ignored so the count can size pagination.
func CountCertificates(f store.Filter, ph Placeholder) (Query, error) {
	b, err := certWhere(f, ph)
	if err != nil {
		return Query{}, err
	}
	return Query{SQL: "SELECT count(*) FROM certificates" + b.where(), Args: b.args}, nil
}

// Events selects events matching f, oldest first.
func Events(f store.EventFilter, ph Placeholder) (Query, error) {
	b := &builder{ph: ph}
	if f.AfterSeq > 0 {
		b.cond("seq > %s", f.AfterSeq)
	}
	if len(f.Actions) > 0 {
		acts := f.Actions
		if f.Action != "" {
			acts = append([]Action(nil), acts...)
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
		b.cond("at >= %s", Micros(f.Since))
	}
	n, err := limit(f.Limit)
	if err != nil {
		return Query{}, err
	}
	sql := "SELECT " + EventColumns + " FROM events" + b.where() + fmt.Sprintf(" ORDER BY seq LIMIT %d", n)
	return Query{SQL: sql, Args: b.args}, nil
}

// Leaves selects events with leaf_index >= start, in leaf order.
func Leaves(start int64, n int, ph Placeholder) (Query, error) {
	return leafQuery(EventColumns, start, n, ph)
}

// LeafHashes selects leaf hashes from start, in leaf order.
func LeafHashes(start int64, n int, ph Placeholder) (Query, error) {
	return leafQuery("leaf_hash", start, n, ph)
}

func leafQuery(cols string, start int64, n int, ph Placeholder) (Query, error) {
	if start < 0 {
		return Query{}, fmt.Errorf("leaf index %d is negative", start)
	}
	n, err := limit(n)
	if err != nil {
		return Query{}, err
	}
	return Query{
		SQL:  fmt.Sprintf("SELECT %s FROM events WHERE leaf_index >= %s ORDER BY leaf_index LIMIT %d", cols, ph(1), n),
		Args: []any{start},
	}, nil
}

// Checkpoints selects checkpoints with size > afterSize, smallest first.
func Checkpoints(afterSize int64, n int, ph Placeholder) (Query, error) {
	n, err := limit(n)
	if err != nil {
		return Query{}, err
	}
	return Query{
		SQL:  fmt.Sprintf("SELECT %s FROM checkpoints WHERE size > %s ORDER BY size LIMIT %d", CheckpointColumns, ph(1), n),
		Args: []any{afterSize},
	}, nil
}

// LatestCheckpoint selects the largest checkpoint.
const LatestCheckpoint = "SELECT " + CheckpointColumns + " FROM checkpoints ORDER BY size DESC LIMIT 1"

// NextLeafIndex is the index the next leaf gets; run it inside the batch
// transaction, under the engine's write serialisation. It is written as
// ORDER BY … LIMIT 1 rather than max()+1, which SQLite answers by scanning
// the table once max is wrapped in an expression; this form reads one
// entry at the end of the leaf_index index on both engines.
const NextLeafIndex = "SELECT " + NextLeafIndexExpr

// NextLeafIndexExpr is NextLeafIndex as a scalar expression, for use
// inside an INSERT.
const NextLeafIndexExpr = "COALESCE((SELECT leaf_index FROM events ORDER BY leaf_index DESC LIMIT 1) + 1, 0)"

// RevokedCertificates selects the revoked certificates of issuer (any when
// empty) with NotAfter at or after validAt.
func RevokedCertificates(issuer string, validAt int64, ph Placeholder) Query {
	b := &builder{ph: ph}
	b.conds = append(b.conds, "status = 'revoked'")
	b.cond("not_after >= %s", validAt)
	if issuer != "" {
		b.cond("issuer = %s", issuer)
	}
	return Query{SQL: "SELECT serial, identity, issuer, revoked_at, revocation_reason, not_after FROM certificates" + b.where(), Args: b.args}
}

// ScanRevoked reads one row selected by RevokedCertificates.
func ScanRevoked(scan func(dest ...any) error) (store.Revoked, error) {
	var r store.Revoked
	var at, na int64
	var reason int64
	if err := scan(&r.Serial, &r.Identity, &r.Issuer, &at, &reason, &na); err != nil {
		return r, err
	}
	r.RevokedAt, r.NotAfter, r.Reason = FromMicros(at), FromMicros(na), int(reason)
	return r, nil
}

// DenialColumns is the column list ScanDenial expects.
const DenialColumns = "identity, at, actor, detail, event_seq"

// ScanDenial reads one denied_identities row.
func ScanDenial(scan func(dest ...any) error) (store.Denial, error) {
	var d store.Denial
	var at int64
	if err := scan(&d.Identity, &at, &d.Actor, &d.Detail, &d.EventSeq); err != nil {
		return d, err
	}
	d.Time = FromMicros(at)
	return d, nil
}
