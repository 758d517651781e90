package sqlstore

import (
	"context"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// IsDenied implements store.Store.
func (s *Store) IsDenied(ctx context.Context, identity string) (bool, error) {
	var denied bool
	if err := s.read.QueryRow(ctx, s.stmt.isDenied, identity).Scan(&denied); err != nil {
		return false, s.errorf("read the deny list: %w", err)
	}
	return denied, nil
}

// DeniedIdentities implements store.Store.
func (s *Store) DeniedIdentities(ctx context.Context) ([]store.Denial, error) {
	return list(ctx, s, "read the deny list", scanDenial, query{SQL: s.stmt.deniedIdentities}, nil)
}

// RevokedCertificates implements store.Store. An error from fn ends the
// listing and is returned as it is.
func (s *Store) RevokedCertificates(ctx context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) error {
	q := revokedCertificates(issuer, micros(validAt), &s.d)
	var fnErr error
	err := queryEach(ctx, s.read, q.SQL, q.Args, func(scan scanFunc) error {
		r, err := scanRevoked(scan)
		if err != nil {
			return err
		}
		fnErr = fn(r)
		return fnErr
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return s.errorf("list revoked certificates: %w", err)
	}
	return nil
}
