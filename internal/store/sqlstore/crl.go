package sqlstore

import (
	"context"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// NumberCRL implements store.Store. The number comes from one upsert on
// the issuer's crl_numbers row, whose lock orders the servers numbering a
// CRL of the same issuer; the revocations are listed from a view of the
// database taken while that lock is held. A server that gets a larger
// number waited for the lock, so its view is later and lists at least
// what the smaller number's did.
//
// On one pool (PostgreSQL) the listing runs in the upsert's transaction,
// so the lock is held while it runs: it only delays another server's CRL
// of the same issuer. With a single writer (SQLite), holding the lock
// would stop every issuance; there the upsert's transaction only starts
// a read snapshot on a reader, and the listing runs on that after commit.
func (s *Store) NumberCRL(ctx context.Context, issuer string, thisUpdate time.Time, fn func(store.Revoked) error) (store.CRLNumber, error) {
	var fnErr error
	n, err := s.numberCRL(ctx, issuer, thisUpdate, func(r store.Revoked) error {
		fnErr = fn(r)
		return fnErr
	})
	if fnErr != nil {
		return store.CRLNumber{}, fnErr
	}
	return n, err
}

func (s *Store) numberCRL(ctx context.Context, issuer string, thisUpdate time.Time, fn func(store.Revoked) error) (n store.CRLNumber, err error) {
	ctx, next, end := s.stream(ctx, "number a CRL of issuer "+issuer)
	defer end(&err)
	take := func(tx Conn) error {
		var prior int64
		if err := tx.QueryRow(ctx, s.stmt.numberCRL, issuer, micros(thisUpdate), micros(thisUpdate)).Scan(&n.Number, &prior); err != nil {
			return err
		}
		if prior != 0 {
			n.PreviousThisUpdate = fromMicros(prior)
		}
		next()
		return nil
	}
	list := func(c Conn) error {
		q := revokedCertificates(issuer, micros(thisUpdate), &s.d)
		return queryEach(ctx, c, q.SQL, q.Args, func(scan scanFunc) error {
			r, err := scanRevoked(scan)
			if err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
			next()
			return nil
		})
	}
	if s.d.OnePool {
		err = s.write.InTx(ctx, func(tx Conn) error {
			if err := take(tx); err != nil {
				return err
			}
			return list(tx)
		})
	} else {
		err = s.read.InSnapshot(ctx, func(snap Conn) error {
			err := s.write.InTx(ctx, func(tx Conn) error {
				if err := take(tx); err != nil {
					return err
				}
				// The snapshot's first query takes it: now, under the lock.
				var rows int
				return snap.QueryRow(ctx, s.stmt.countCRLNumbers).Scan(&rows)
			})
			if err != nil {
				return err
			}
			return list(snap)
		})
	}
	if err != nil {
		return store.CRLNumber{}, s.errorf("number a CRL of issuer %s: %w", issuer, err)
	}
	return n, nil
}
