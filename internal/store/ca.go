package store

import (
	"errors"
	"fmt"
)

// CABinding names the CA a database belongs to, for Store.BindCA. A
// database holds one CA's inventory and audit log: a second CA writing
// into it would break both (its admins unknown, its log unverifiable).
type CABinding struct {
	// Root is the lower-case hex SHA-256 fingerprint of the CA's root.
	Root string
	// Issuer is the fingerprint of the intermediate the server issues
	// with. A database written before bindings were recorded belongs to
	// the CA if it holds a certificate of this issuer.
	Issuer string
	// Create records Root in a database that holds nothing yet (mica
	// init). Without it such a database is refused with ErrNoCA, because a
	// server that is pointed at it has its records somewhere else.
	Create bool
}

// ErrNoCA is returned by BindCA without Create for a database that holds
// nothing and belongs to no CA.
var ErrNoCA = errors.New("store: the database belongs to no CA yet")

// ForeignCAError is returned by BindCA for a database that belongs to
// another CA.
type ForeignCAError struct {
	// Recorded is the root fingerprint the database records; empty for a
	// database from before bindings were recorded that holds no
	// certificate of the wanted CA.
	Recorded string
	Want     string
}

func (e *ForeignCAError) Error() string {
	if e.Recorded == "" {
		return fmt.Sprintf("store: the database holds another CA's records (none issued by this CA, root sha256 %s)", e.Want)
	}
	return fmt.Sprintf("store: the database belongs to the CA with root sha256 %s, not %s", e.Recorded, e.Want)
}
