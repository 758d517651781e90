package sqlstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/groupcommit"
)

// Store implements store.Store and store.ACMEStore but for Close, on any
// engine. An engine embeds it and adds Close and the commit of a batch.
type Store struct {
	d         Dialect
	read      Reader // queries
	write     DB     // direct writes that need no group commit
	committer *groupcommit.Committer[Op]
	stmt      statements
	timeout   time.Duration
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
	Commit groupcommit.CommitFunc[Op]
	// Timeout bounds every call: a read, a write and its wait for the
	// group commit, and each batch's transaction. Zero means
	// store.DefaultTimeout.
	Timeout time.Duration
}

// New prepares the statements in the engine's dialect and starts the
// group committer. The engine opens its connections and runs Migrate
// before, and calls StopWrites before closing them.
func New(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{d: cfg.Dialect, read: cfg.Read, write: cfg.Write, stmt: newStatements(&cfg.Dialect), timeout: cfg.Timeout}
	if s.timeout <= 0 {
		s.timeout = store.DefaultTimeout
	}
	if p, ok := cfg.Read.(Preparer); ok {
		// The deny list is read on every issuance and the client's
		// certificate on every authenticated request; preparing them per
		// call cost more than the lookups themselves.
		for _, q := range []string{s.stmt.isDenied, s.stmt.certBySerialNoDER, s.stmt.certStatus} {
			if err := p.Prepare(ctx, q); err != nil {
				return nil, fmt.Errorf("%s: prepare %q: %w", s.d.Name, q, err)
			}
		}
	}
	s.committer = groupcommit.New(groupcommit.Config{Timeout: s.timeout}, cfg.Commit)
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

// statements are the fixed statements, in the dialect's placeholders.
// They are written once here with '?' placeholders and rewritten when the
// store opens, not per call.
type statements struct {
	certBySerial, certByFingerprint, certByToken string
	certBySerialNoDER, certStatus                string
	eventBySeq, lastEventSeq                     string
	addCheckpoint, latestCheckpoint              string
	isDenied, deniedIdentities                   string
	useNonce, sweepNonces                        string
	addNonceKey, nonceKey, sweepNonceKeys        string
	numberCRL, countCRLNumbers                   string
	acme                                         map[store.ACMEKind]acmeStatements
}

// acmeStatements are the statements on one ACME kind's table.
type acmeStatements struct {
	insert, update, status, byID, byLookup, children, byStatus string
}

func newStatements(d *Dialect) statements {
	st := statements{
		certBySerial:      d.rebind("SELECT " + certSelect("", false) + " FROM certificates WHERE serial = ?"),
		certBySerialNoDER: d.rebind("SELECT " + certSelect("", true) + " FROM certificates WHERE serial = ?"),
		certStatus:        d.rebind("SELECT status, revoked_at, revocation_reason FROM certificates WHERE serial = ?"),
		certByFingerprint: d.rebind("SELECT " + certSelect("", false) + " FROM certificates WHERE fingerprint = ?"),
		certByToken:       d.rebind("SELECT " + certSelect("", false) + " FROM certificates WHERE token_jti = ? AND token_jti <> ''"),
		eventBySeq:        d.rebind("SELECT " + eventSelect + " FROM events WHERE seq = ?"),
		lastEventSeq:      "SELECT coalesce(max(seq), 0) FROM events",
		addCheckpoint: d.rebind("INSERT INTO checkpoints (" + checkpointSelect + ") VALUES (?, ?, ?, ?) " +
			"ON CONFLICT (size) DO NOTHING"),
		latestCheckpoint: "SELECT " + checkpointSelect + " FROM checkpoints ORDER BY size DESC LIMIT 1",
		isDenied:         d.rebind("SELECT EXISTS (SELECT 1 FROM denied_identities WHERE identity = ?)"),
		deniedIdentities: "SELECT " + denialSelect + " FROM denied_identities ORDER BY identity",
		useNonce:         d.rebind("INSERT INTO acme_nonces (nonce, expires) VALUES (?, ?)"),
		sweepNonces:      d.rebind("DELETE FROM acme_nonces WHERE expires < ?"),
		addNonceKey:      d.rebind("INSERT INTO acme_nonce_keys (epoch, secret) VALUES (?, ?) ON CONFLICT (epoch) DO NOTHING"),
		nonceKey:         d.rebind("SELECT secret FROM acme_nonce_keys WHERE epoch = ?"),
		sweepNonceKeys:   d.rebind("DELETE FROM acme_nonce_keys WHERE epoch < ?"),
		// The next number is one more than the last, or thisUpdate in
		// microseconds if that is larger; thisUpdate keeps the latest.
		numberCRL: d.rebind(`INSERT INTO crl_numbers (issuer, number, this_update, prior_this_update) VALUES (?, ?, ?, 0)
ON CONFLICT (issuer) DO UPDATE SET
	number = CASE WHEN crl_numbers.number + 1 > excluded.number THEN crl_numbers.number + 1 ELSE excluded.number END,
	this_update = CASE WHEN crl_numbers.this_update > excluded.this_update THEN crl_numbers.this_update ELSE excluded.this_update END,
	prior_this_update = crl_numbers.this_update
RETURNING number, prior_this_update`),
		countCRLNumbers: "SELECT count(*) FROM crl_numbers",
		acme:            map[store.ACMEKind]acmeStatements{},
	}
	for _, k := range []store.ACMEKind{store.ACMEAccount, store.ACMEOrder, store.ACMEAuthorization, store.ACMEChallenge} {
		t := store.ACMETable(k)
		st.acme[k] = acmeStatements{
			insert:   d.rebind("INSERT INTO " + t + " (" + acmeSelect + ") VALUES (?, ?, ?, ?, ?, ?)"),
			update:   d.rebind("UPDATE " + t + " SET parent = ?, lookup = ?, status = ?, expires = ?, data = ? WHERE id = ? AND status = ? AND lookup = ?"),
			status:   d.rebind("SELECT status, lookup FROM " + t + " WHERE id = ?"),
			byID:     d.rebind("SELECT " + acmeSelect + " FROM " + t + " WHERE id = ?"),
			byLookup: d.rebind("SELECT " + acmeSelect + " FROM " + t + " WHERE lookup = ?"),
			// The ACME door makes IDs that sort in creation order.
			children: d.rebind("SELECT " + acmeSelect + " FROM " + t + " WHERE parent = ? ORDER BY id LIMIT ?"),
			byStatus: d.rebind("SELECT " + acmeSelect + " FROM " + t + " WHERE status = ? ORDER BY id LIMIT ?"),
		}
	}
	return st
}
