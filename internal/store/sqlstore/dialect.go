package sqlstore

import (
	"strings"

	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// Dialect is what the shared code needs to know about an engine's SQL.
type Dialect struct {
	// Name is the engine's name ("sqlite", "postgres"): the first word of
	// every error, so that an operator knows which database said it.
	Name string
	// Placeholder renders the n-th (1-based) query parameter.
	Placeholder sqlrec.Placeholder
	// IsUniqueViolation reports whether err is a unique constraint failing.
	IsUniqueViolation func(err error) bool
	// LockMigrations and LockEvents, when set, are run first in the
	// transaction that applies migrations, and in one that appends audit
	// leaves, so that servers sharing the database take turns. They are
	// empty for an engine whose single writer already serialises these.
	LockMigrations, LockEvents string
}

// rebind rewrites a statement written with '?' placeholders into the
// dialect's style. Statements in this package have no '?' inside
// literals, so every '?' is a parameter.
func (d *Dialect) rebind(query string) string {
	if d.Placeholder(1) == "?" {
		return query
	}
	var b strings.Builder
	n := 0
	for {
		i := strings.IndexByte(query, '?')
		if i < 0 {
			b.WriteString(query)
			return b.String()
		}
		n++
		b.WriteString(query[:i])
		b.WriteString(d.Placeholder(n))
		query = query[i+1:]
	}
}
