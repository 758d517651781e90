package sqlstore

import (
	"context"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// IsDenied implements store.Store.
func (s *Store) IsDenied(ctx context.Context, identity string) (_ bool, err error) {
	ctx, end := s.call(ctx, "read the deny list", false)
	defer end(&err)
	var denied bool
	if err := s.read.QueryRow(ctx, s.stmt.isDenied, identity).Scan(&denied); err != nil {
		return false, s.errorf("read the deny list: %w", err)
	}
	return denied, nil
}

// DeniedIdentities implements store.Store.
func (s *Store) DeniedIdentities(ctx context.Context) (_ []store.Denial, err error) {
	ctx, end := s.call(ctx, "read the deny list", false)
	defer end(&err)
	return list(ctx, s, "read the deny list", scanDenial, query{SQL: s.stmt.deniedIdentities}, nil)
}

// RevokedCertificates implements store.Store. An error from fn ends the
// listing and is returned as it is. The listing may take longer than the
// store's timeout in all, as long as the database hands over each row
// within it (time spent in fn does not count).
func (s *Store) RevokedCertificates(ctx context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) error {
	var fnErr error
	err := s.listRevoked(ctx, issuer, validAt, func(r store.Revoked) error {
		fnErr = fn(r)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

func (s *Store) listRevoked(ctx context.Context, issuer string, validAt time.Time, fn func(store.Revoked) error) (err error) {
	ctx, next, end := s.stream(ctx, "list revoked certificates")
	defer end(&err)
	q := revokedCertificates(issuer, micros(validAt), &s.d)
	err = queryEach(ctx, s.read, q.SQL, q.Args, func(scan scanFunc) error {
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
	if err != nil {
		return s.errorf("list revoked certificates: %w", err)
	}
	return nil
}
