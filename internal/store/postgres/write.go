package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mica-pki/mica/internal/store/groupcommit"
	"github.com/mica-pki/mica/internal/store/sqlrec"
)

// Each write is one statement whose data-modifying CTEs decide and write
// together, so a whole batch goes to the server as a single pipeline with
// no round trip per item. Parameters carry casts because PostgreSQL cannot
// infer types through INSERT ... SELECT.

const eventValues = `$1::bigint, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text`

// eventColumns and nextLeaf append the event's audit leaf: its index is
// max+1, read in the statement's snapshot, which includes the rows this
// batch wrote before; the batch's advisory lock keeps every other server
// out until commit, so indexes are contiguous and never fork. The leaf
// hash is the statement's last parameter.
const (
	eventColumns = `at, actor, source, action, serial, fingerprint, identity, profile, outcome, detail, leaf_index, leaf_hash`
	nextLeaf     = `(` + sqlrec.NextLeafIndexExpr + `)`
)

const insertEvent = `INSERT INTO events (` + eventColumns + `)
VALUES (` + eventValues + `, ` + nextLeaf + `, $11::bytea) RETURNING seq, leaf_index`

// issueSQL writes one issuance unless its token was used before ($26 and
// the conflict) or its serial or fingerprint is already recorded (dup).
// The token is consumed only together with the certificate, so a refused
// item leaves nothing behind. All CTEs share one snapshot, which includes
// rows written earlier in the same batch transaction.
const issueSQL = `WITH dup AS (
	SELECT EXISTS (SELECT 1 FROM certificates WHERE serial = $11::text OR fingerprint = $12::text) AS d
), used AS (
	SELECT $26::text IS NOT NULL AND EXISTS (SELECT 1 FROM used_tokens WHERE jti = $26::text) AS u
), tok AS (
	INSERT INTO used_tokens (jti, expires_at, used_at)
	SELECT $26::text, $27::bigint, $1::bigint FROM dup WHERE $26::text IS NOT NULL AND NOT dup.d
	ON CONFLICT DO NOTHING
	RETURNING jti
), ev AS (
	INSERT INTO events (` + eventColumns + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, $28::bytea FROM dup
	WHERE NOT dup.d AND ($26::text IS NULL OR EXISTS (SELECT 1 FROM tok))
	RETURNING seq, leaf_index
), cert AS (
	INSERT INTO certificates (` + sqlrec.CertColumns + `)
	SELECT $11::text, $12::text, $13::text, $14::text, $15::text, $16::text, $17::text, $18::bigint,
		$19::bigint, $20::text, $21::text, $22::bigint, $23::integer, $24::text, $25::bytea, ev.seq, $29::text
	FROM ev
	RETURNING serial
)
SELECT (SELECT u FROM used), (SELECT d FROM dup), (SELECT seq FROM ev), (SELECT leaf_index FROM ev)`

// revokeSQL revokes an active certificate and records the event; when
// nothing was revoked, the status read from the statement's snapshot says
// whether the certificate is missing or already revoked.
const revokeSQL = `WITH upd AS (
	UPDATE certificates SET status = 'revoked', revoked_at = $12::bigint, revocation_reason = $13::integer
	WHERE serial = $11::text AND status = 'active'
	RETURNING serial
), ev AS (
	INSERT INTO events (` + eventColumns + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, $14::bytea FROM upd
	RETURNING seq, leaf_index
)
SELECT (SELECT seq FROM ev), (SELECT status FROM certificates WHERE serial = $11::text), (SELECT leaf_index FROM ev)`

// revokeIdentitySQL revokes every live certificate of an identity and
// records one event per certificate. It has its own parameter numbering:
// $1 at, $2 actor, $3 source, $4 action, $5 identity, $6 outcome,
// $7 detail, $8 revocation time, $9 reason.
const revokeIdentitySQL = `WITH upd AS (
	UPDATE certificates SET status = 'revoked', revoked_at = $8::bigint, revocation_reason = $9::integer
	WHERE identity = $5::text AND status = 'active' AND not_after >= $8::bigint
	RETURNING serial, fingerprint, profile
), ev AS (
	INSERT INTO events (at, actor, source, action, serial, fingerprint, identity, profile, outcome, detail, leaf_index)
	SELECT $1::bigint, $2::text, $3::text, $4::text, u.serial, u.fingerprint, $5::text, u.profile, $6::text, $7::text,
		` + nextLeaf + ` + u.n - 1
	FROM (SELECT *, row_number() OVER (ORDER BY serial) AS n FROM upd) u
	ORDER BY u.n
	RETURNING seq, serial, fingerprint, profile, leaf_index
)
SELECT serial, fingerprint, profile, seq, leaf_index FROM ev ORDER BY seq`

// denySQL adds $11 to the deny list with its event, or nothing when it is
// there already (seq NULL).
const denySQL = `WITH ev AS (
	INSERT INTO events (` + eventColumns + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, $12::bytea
	WHERE NOT EXISTS (SELECT 1 FROM denied_identities WHERE identity = $11::text)
	RETURNING seq, leaf_index
), ins AS (
	INSERT INTO denied_identities (identity, at, actor, detail, event_seq)
	SELECT $11::text, $1::bigint, $2::text, $10::text, ev.seq FROM ev
	RETURNING identity
)
SELECT (SELECT seq FROM ev), (SELECT leaf_index FROM ev)`

// allowSQL takes $11 off the deny list with its event, or nothing when it
// was not there (seq NULL).
const allowSQL = `WITH del AS (
	DELETE FROM denied_identities WHERE identity = $11::text RETURNING identity
), ev AS (
	INSERT INTO events (` + eventColumns + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, $12::bytea FROM del
	RETURNING seq, leaf_index
)
SELECT (SELECT seq FROM ev), (SELECT leaf_index FROM ev)`

func eventArgs(e *sqlrec.EventRow) []any {
	return []any{e.At, e.Actor, e.Source, e.Action, e.Serial, e.Fingerprint, e.Identity, e.Profile, e.Outcome, e.Detail}
}

// commit writes one batch in one transaction, sent as one pipeline.
//
// Its first statement takes a transaction-level advisory lock shared by
// every server on this database. Sequence values are handed out when a
// row is inserted, not when it commits; without the lock, server A could
// take seq 10, server B seq 11 and commit first, and a reader following
// the log by AfterSeq would read 11 and never see 10. Holding the lock
// from before the first event insert until commit makes seq order and
// commit order the same. It also serializes batches across servers, which
// costs little: each server's batch is one transaction and one round trip,
// and the batches themselves grow to absorb the wait.
func (s *Store) commit(ctx context.Context, batch []*groupcommit.Item[sqlrec.Op]) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin batch of %d, nothing was committed: %w", len(batch), err)
	}
	defer tx.Rollback(ctx)
	b := &pgx.Batch{}
	b.Queue(dialect.LockEvents)
	notify := false
	for _, it := range batch {
		op := &it.Op
		args := eventArgs(&op.Event)
		switch op.Kind {
		case sqlrec.KindIssuance:
			c := &op.Cert
			args = append(args, c.Serial, c.Fingerprint, c.Identity, c.SANs, c.Profile, c.Requester,
				c.SourceAddr, c.NotBefore, c.NotAfter, c.Issuer, c.Status, c.RevokedAt, c.Reason,
				c.RenewedFrom, c.DER)
			if t := op.Token; t != nil {
				args = append(args, t.JTI, t.ExpiresAt)
			} else {
				args = append(args, nil, nil)
			}
			b.Queue(issueSQL, append(args, op.Event.LeafHash, c.Owner)...)
		case sqlrec.KindEvent:
			b.Queue(insertEvent, append(args, op.Event.LeafHash)...)
		case sqlrec.KindRevoke:
			b.Queue(revokeSQL, append(args, op.Serial, op.RevokedAt, op.Reason, op.Event.LeafHash)...)
		case sqlrec.KindRevokeIdentity:
			e := &op.Event
			b.Queue(revokeIdentitySQL, e.At, e.Actor, e.Source, e.Action, op.Identity, e.Outcome, e.Detail, op.RevokedAt, op.Reason)
		case sqlrec.KindDeny:
			b.Queue(denySQL, append(args, op.Identity, op.Event.LeafHash)...)
		case sqlrec.KindAllow:
			b.Queue(allowSQL, append(args, op.Identity, op.Event.LeafHash)...)
		default:
			return fmt.Errorf("postgres: unknown operation kind %d", op.Kind)
		}
		notify = notify || sqlrec.RevocationKind(op.Kind)
	}
	if notify {
		// Delivered by PostgreSQL at commit, to every server listening.
		b.Queue("SELECT pg_notify($1, '')", revocationChannel)
	}
	br := tx.SendBatch(ctx, b)
	if err := readResults(br, batch, notify); err != nil {
		br.Close()
		return fmt.Errorf("postgres: write batch of %d, nothing was committed: %w", len(batch), err)
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("postgres: write batch of %d, nothing was committed: %w", len(batch), err)
	}
	if err := hashRevokedIdentities(ctx, tx, batch); err != nil {
		return fmt.Errorf("postgres: write batch of %d, nothing was committed: %w", len(batch), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit batch of %d, nothing was committed: %w", len(batch), err)
	}
	return nil
}

// hashRevokedIdentities fills in the leaf hashes of the events an identity
// revocation wrote, one per certificate: which certificates those are is
// only known inside the transaction, so their hashes are made here, before
// commit, in one more round trip for the rare batch that has any.
func hashRevokedIdentities(ctx context.Context, tx pgx.Tx, batch []*groupcommit.Item[sqlrec.Op]) error {
	b := &pgx.Batch{}
	for _, it := range batch {
		op := &it.Op
		if op.Kind != sqlrec.KindRevokeIdentity {
			continue
		}
		for i := range op.Revoked {
			r := &op.Revoked[i]
			ev := op.Event
			ev.Serial, ev.Fingerprint, ev.Profile = r.Serial, r.Fingerprint, r.Profile
			ev.Rehash()
			r.LeafHash = ev.LeafHash
			b.Queue("UPDATE events SET leaf_hash = $1 WHERE seq = $2", r.LeafHash, r.Seq)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record audit leaf hashes: %w", err)
	}
	return nil
}

func readResults(br pgx.BatchResults, batch []*groupcommit.Item[sqlrec.Op], notify bool) error {
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("take the event order lock: %w", err)
	}
	for _, it := range batch {
		op := &it.Op
		switch op.Kind {
		case sqlrec.KindIssuance:
			var used, dup bool
			var seq, leafIndex *int64
			if err := br.QueryRow().Scan(&used, &dup, &seq, &leafIndex); err != nil {
				return err
			}
			switch {
			case seq != nil && leafIndex != nil:
				op.Seq, op.LeafIndex = *seq, *leafIndex
			case op.Token != nil && (used || !dup):
				// Used before this statement, or taken by a concurrent
				// transaction that committed while we waited on the conflict.
				it.Err = op.Refuse(dialect.Name, sqlrec.RefusedTokenUsed)
			default:
				it.Err = op.Refuse(dialect.Name, sqlrec.RefusedCertExists)
			}
		case sqlrec.KindEvent:
			if err := br.QueryRow().Scan(&op.Seq, &op.LeafIndex); err != nil {
				return err
			}
		case sqlrec.KindRevoke:
			var seq, leafIndex *int64
			var status *string
			if err := br.QueryRow().Scan(&seq, &status, &leafIndex); err != nil {
				return err
			}
			switch {
			case seq != nil && leafIndex != nil:
				op.Seq, op.LeafIndex = *seq, *leafIndex
			case status == nil:
				it.Err = op.Refuse(dialect.Name, sqlrec.RefusedNotFound)
			default:
				it.Err = op.Refuse(dialect.Name, sqlrec.RefusedAlreadyRevoked)
			}
		case sqlrec.KindRevokeIdentity:
			rows, err := br.Query()
			if err != nil {
				return err
			}
			op.Revoked = op.Revoked[:0]
			for rows.Next() {
				var r sqlrec.RevokedRow
				if err := rows.Scan(&r.Serial, &r.Fingerprint, &r.Profile, &r.Seq, &r.LeafIndex); err != nil {
					rows.Close()
					return err
				}
				op.Revoked = append(op.Revoked, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		case sqlrec.KindDeny, sqlrec.KindAllow:
			var seq, leafIndex *int64
			if err := br.QueryRow().Scan(&seq, &leafIndex); err != nil {
				return err
			}
			switch {
			case seq != nil && leafIndex != nil:
				op.Seq, op.LeafIndex = *seq, *leafIndex
			case op.Kind == sqlrec.KindDeny:
				it.Err = op.Refuse(dialect.Name, sqlrec.RefusedAlreadyDenied)
			default:
				it.Err = op.Refuse(dialect.Name, sqlrec.RefusedNotFound)
			}
		}
	}
	if notify {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("announce the revocation: %w", err)
		}
	}
	return nil
}
