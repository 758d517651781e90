package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/store"
)

// openRotation records the data directory's CA as the first CA slots (the
// first time a database serves it) and follows the slots from then on:
// the manager is the authority's CA, and onChange hears of every step.
func openRotation(ctx context.Context, d dataPaths, cfg *Config, hier *ca.Hierarchy, st store.Store, keys custody.Keys,
	eng *policy.Engine, log *slog.Logger, onChange func()) (*rotation.Manager, error) {
	rootRef, err := ca.KeyRef(d.caDir(), ca.RootKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		rootRef = custody.Ref{} // the root is kept offline
	} else if err != nil {
		return nil, err
	}
	interRef, err := ca.KeyRef(d.caDir(), ca.IntermediateKeyFile)
	if err != nil {
		return nil, err
	}
	if err := rotation.Import(ctx, st, hier.Root, hier.Intermediate, rootRef, interRef, time.Now()); err != nil {
		return nil, err
	}
	res, err := cfg.CA.Resolve(maxLeafTTL(eng))
	if err != nil {
		return nil, err
	}
	return rotation.New(ctx, rotation.Config{
		Store: st, Keys: keys, Thresholds: res.Thresholds,
		IntermediateLifetime: res.IntermediateLifetime, RootLifetime: res.RootLifetime, Poll: res.Poll,
		// Every certificate says where its issuer's revocation status is
		// published.
		URLs: func(c *x509.Certificate) (string, string) {
			return cfg.PublicURL + crl.Path(c), cfg.PublicURL + ocspPath
		},
		Logger: log, OnChange: onChange,
	})
}

// maxLeafTTL is the longest lifetime any of the config's profiles gives a
// certificate: a rotation's default propagation, since every holder has
// renewed, and fetched the bundle, within it. mica's own profiles are left
// out: their holders (administrators, the server, the OCSP responders)
// follow the bundle through the API.
func maxLeafTTL(eng *policy.Engine) time.Duration {
	var longest time.Duration
	for _, name := range eng.Profiles() {
		if authority.IsReservedProfile(name) {
			continue
		}
		if info, ok := eng.Profile(name); ok {
			longest = max(longest, info.MaxTTL)
		}
	}
	return longest
}
