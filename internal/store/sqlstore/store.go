package sqlstore

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/groupcommit"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// Store implements the methods of store.Store and store.ACMEStore that are
// the same SQL on every engine. An engine embeds it and adds Close and
// the commit of a batch.
type Store struct {
	d         Dialect
	read      Reader // queries
	write     DB     // direct writes that need no group commit
	committer *groupcommit.Committer[sqlrec.Op]
	stmt      statements
	// nonceUses counts UseACMENonce calls, to sweep every nonceSweepEvery.
	nonceUses atomic.Uint64
}

// Config is what an engine hands New.
type Config struct {
	Dialect Dialect
	// Read serves queries. It may be a pool of read-only connections.
	Read Reader
	// Write takes the small writes that go straight to the database:
	// ACME records, nonces, checkpoints.
	Write DB
	// Commit writes one batch of queued operations in one transaction
	// (see package groupcommit); it is the engine's own.
	Commit groupcommit.CommitFunc[sqlrec.Op]
}

// New prepares the statements in the engine's dialect and starts the
// group committer. The engine opens its connections and applies
// migrations (Migrate, BackfillLeaves) before, and calls StopWrites
// before closing them.
func New(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{d: cfg.Dialect, read: cfg.Read, write: cfg.Write, stmt: newStatements(&cfg.Dialect)}
	if p, ok := cfg.Read.(Preparer); ok {
		// The deny list is read on every issuance; preparing it per call
		// cost more than the lookup itself.
		if err := p.Prepare(ctx, s.stmt.isDenied); err != nil {
			return nil, fmt.Errorf("%s: prepare the deny-list lookup: %w", s.d.Name, err)
		}
	}
	s.committer = groupcommit.New(groupcommit.Config{}, cfg.Commit)
	return s, nil
}

// StopWrites commits every write already queued and stops the committer.
// Queued writes after it fail with groupcommit.ErrClosed.
func (s *Store) StopWrites() error {
	return s.committer.Close()
}

// CommitStats are the group committer's running totals, for metrics.
func (s *Store) CommitStats() groupcommit.Stats { return s.committer.Stats() }

// errorf formats an error prefixed with the engine's name.
func (s *Store) errorf(format string, args ...any) error {
	return fmt.Errorf(s.d.Name+": "+format, args...)
}

// statements are the static statements, in the dialect's placeholders.
type statements struct {
	certBySerial, certByFingerprint string
	eventBySeq, lastEventSeq        string
	addCheckpoint                   string
	isDenied, deniedIdentities      string
	useNonce, sweepNonces           string
	addNonceKey, nonceKey           string
	sweepNonceKeys                  string
	acme                            map[store.ACMEKind]acmeStatements
}

// acmeStatements are the statements on one ACME kind's table.
type acmeStatements struct {
	insert, update, status, byID, byLookup, children, byStatus string
}

func newStatements(d *Dialect) statements {
	st := statements{
		certBySerial:      d.rebind("SELECT " + sqlrec.CertColumns + " FROM certificates WHERE serial = ?"),
		certByFingerprint: d.rebind("SELECT " + sqlrec.CertColumns + " FROM certificates WHERE fingerprint = ?"),
		eventBySeq:        d.rebind("SELECT " + sqlrec.EventColumns + " FROM events WHERE seq = ?"),
		lastEventSeq:      "SELECT coalesce(max(seq), 0) FROM events",
		addCheckpoint: d.rebind("INSERT INTO checkpoints (" + sqlrec.CheckpointColumns + ") VALUES (?, ?, ?, ?) " +
			"ON CONFLICT (size) DO NOTHING"),
		isDenied:         d.rebind("SELECT EXISTS (SELECT 1 FROM denied_identities WHERE identity = ?)"),
		deniedIdentities: "SELECT " + sqlrec.DenialColumns + " FROM denied_identities ORDER BY identity",
		useNonce:         d.rebind("INSERT INTO acme_nonces (nonce, expires) VALUES (?, ?)"),
		sweepNonces:      d.rebind("DELETE FROM acme_nonces WHERE expires < ?"),
		addNonceKey:      d.rebind("INSERT INTO acme_nonce_keys (epoch, secret) VALUES (?, ?) ON CONFLICT (epoch) DO NOTHING"),
		nonceKey:         d.rebind("SELECT secret FROM acme_nonce_keys WHERE epoch = ?"),
		sweepNonceKeys:   d.rebind("DELETE FROM acme_nonce_keys WHERE epoch < ?"),
		acme:             map[store.ACMEKind]acmeStatements{},
	}
	const cols = "id, parent, lookup, status, expires, data"
	for _, k := range []store.ACMEKind{store.ACMEAccount, store.ACMEOrder, store.ACMEAuthorization, store.ACMEChallenge} {
		t := store.ACMETable(k)
		st.acme[k] = acmeStatements{
			insert:   d.rebind("INSERT INTO " + t + " (" + cols + ") VALUES (?, ?, ?, ?, ?, ?)"),
			update:   d.rebind("UPDATE " + t + " SET parent = ?, lookup = ?, status = ?, expires = ?, data = ? WHERE id = ? AND status = ? AND lookup = ?"),
			status:   d.rebind("SELECT status, lookup FROM " + t + " WHERE id = ?"),
			byID:     d.rebind("SELECT " + cols + " FROM " + t + " WHERE id = ?"),
			byLookup: d.rebind("SELECT " + cols + " FROM " + t + " WHERE lookup = ?"),
			// The ACME door makes IDs that sort in creation order.
			children: d.rebind("SELECT " + cols + " FROM " + t + " WHERE parent = ? ORDER BY id LIMIT ?"),
			byStatus: d.rebind("SELECT " + cols + " FROM " + t + " WHERE status = ? ORDER BY id LIMIT ?"),
		}
	}
	return st
}
