package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/mica-pki/mica/internal/store/groupcommit"
	"github.com/mica-pki/mica/internal/store/sqlstore"
)

// Each write is one statement whose data-modifying CTEs decide and write
// together, so a whole batch goes to the server as a single pipeline with
// no round trip per item. Parameters carry casts because PostgreSQL cannot
// infer types through INSERT ... SELECT. The statements are built from
// the column lists of package sqlstore, so that a new column needs no
// change here.
//
// Every statement but revokeIdentitySQL starts with the event's values
// ($1 to $nEvent, in the order of sqlstore.EventColumns) and its leaf hash.

var (
	eventCols = sqlstore.EventColumns()
	certCols  = sqlstore.CertColumns()
	nEvent    = len(eventCols)
	// leafHash is the parameter of the event's leaf hash.
	leafHash = param(nEvent+1, "bytea")
)

// param is the n-th parameter cast to typ.
func param(n int, typ string) string { return fmt.Sprintf("$%d::%s", n, typ) }

// params are the parameters first, first+1, … cast to the columns' types.
func params(first int, cols []sqlstore.Column) string {
	ps := make([]string, len(cols))
	for i, c := range cols {
		ps[i] = param(first+i, c.Type)
	}
	return strings.Join(ps, ", ")
}

// paramOf is the parameter holding column name of cols, whose values
// start at parameter first.
func paramOf(first int, cols []sqlstore.Column, name string) string {
	for i, c := range cols {
		if c.Name == name {
			return param(first+i, c.Type)
		}
	}
	panic("postgres: no column " + name + " among " + sqlstore.Names(cols))
}

// eventParam is the parameter holding the event's column name.
func eventParam(name string) string { return paramOf(1, eventCols, name) }

// eventValues are the event's parameters; eventInsert the columns they go
// to with its audit leaf, and nextLeaf that leaf's index: max+1, read in
// the statement's snapshot, which includes the rows this batch wrote
// before. The batch's advisory lock keeps every other server out until
// commit, so indexes are contiguous and never fork.
var (
	eventValues = params(1, eventCols)
	eventInsert = sqlstore.Names(eventCols) + ", leaf_index, leaf_hash"
	nextLeaf    = "(" + sqlstore.NextLeafIndexExpr + ")"
)

var insertEvent = `INSERT INTO events (` + eventInsert + `)
VALUES (` + eventValues + `, ` + nextLeaf + `, ` + leafHash + `) RETURNING seq, leaf_index`

// issueSQL writes one issuance unless a name of its identity is denied or
// the certificate it renews is no longer active (refused), its token was
// used before (the conflict) or its serial or fingerprint is already
// recorded (dup). The token is consumed only together with the
// certificate, so a refused item leaves nothing behind. All CTEs share one
// snapshot, which includes rows written earlier in the same batch
// transaction. After the event come the token's jti and expiry (NULL
// without a token), then the certificate's values in the order of
// sqlstore.CertColumns but event_seq, which is the event's, then the
// identity's names and the serial renewed (empty for none).
var issueSQL = func() string {
	jti, expires := param(nEvent+2, "text"), param(nEvent+3, "bigint")
	first := nEvent + 4
	serial, fingerprint := paramOf(first, certCols, "serial"), paramOf(first, certCols, "fingerprint")
	names, renews := param(first+len(certCols)-1, "text[]"), param(first+len(certCols), "text")
	return `WITH refused AS (
	SELECT (SELECT identity FROM denied_identities WHERE identity = ANY (` + names + `) ORDER BY identity LIMIT 1) AS denied,
		` + renews + ` <> '' AND NOT EXISTS (SELECT 1 FROM certificates WHERE serial = ` + renews + ` AND status = 'active') AS stale
), dup AS (
	SELECT EXISTS (SELECT 1 FROM certificates WHERE serial = ` + serial + ` OR fingerprint = ` + fingerprint + `)
		OR (SELECT denied IS NOT NULL OR stale FROM refused) AS d
), used AS (
	SELECT ` + jti + ` IS NOT NULL AND EXISTS (SELECT 1 FROM used_tokens WHERE jti = ` + jti + `) AS u
), tok AS (
	INSERT INTO used_tokens (jti, expires_at, used_at)
	SELECT ` + jti + `, ` + expires + `, ` + eventParam("at") + ` FROM dup WHERE ` + jti + ` IS NOT NULL AND NOT dup.d
	ON CONFLICT DO NOTHING
	RETURNING jti
), ev AS (
	INSERT INTO events (` + eventInsert + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, ` + leafHash + ` FROM dup
	WHERE NOT dup.d AND (` + jti + ` IS NULL OR EXISTS (SELECT 1 FROM tok))
	RETURNING seq, leaf_index
), cert AS (
	INSERT INTO certificates (` + sqlstore.Names(certCols) + `)
	SELECT ` + params(first, certCols[:len(certCols)-1]) + `, ev.seq
	FROM ev
	RETURNING serial
)
SELECT (SELECT u FROM used), (SELECT d FROM dup), (SELECT seq FROM ev), (SELECT leaf_index FROM ev),
	(SELECT denied FROM refused), (SELECT stale FROM refused)`
}()

// revokeSQL revokes an active certificate and records the event; when
// nothing was revoked, the status read from the statement's snapshot says
// whether the certificate is missing or already revoked. After the event
// come the serial, the revocation time and the reason.
var revokeSQL = func() string {
	serial := param(nEvent+2, "text")
	return `WITH upd AS (
	UPDATE certificates SET status = 'revoked', revoked_at = ` + param(nEvent+3, "bigint") + `, revocation_reason = ` + param(nEvent+4, "integer") + `
	WHERE serial = ` + serial + ` AND status = 'active'
	RETURNING serial
), ev AS (
	INSERT INTO events (` + eventInsert + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, ` + leafHash + ` FROM upd
	RETURNING seq, leaf_index
)
SELECT (SELECT seq FROM ev), (SELECT status FROM certificates WHERE serial = ` + serial + `), (SELECT leaf_index FROM ev)`
}()

// revokeIdentitySQL revokes every live certificate of an identity and
// records one event per certificate, whose serial, fingerprint and
// profile are the certificate's. Its parameters are the event's other
// values (revokeIdentityArgs), then the identity, the revocation time and
// the reason; the events have no leaf hash yet (see
// hashRevokedIdentities).
var revokeIdentitySQL, revokeIdentityArgs = func() (string, func(e *sqlstore.EventRow) []any) {
	var (
		values []string
		keep   []int // positions in EventRow.Args that are parameters
	)
	for i, c := range eventCols {
		switch c.Name {
		case "serial", "fingerprint", "profile":
			values = append(values, "u."+c.Name)
		default:
			keep = append(keep, i)
			values = append(values, param(len(keep), c.Type))
		}
	}
	n := len(keep)
	identity, at, reason := param(n+1, "text"), param(n+2, "bigint"), param(n+3, "integer")
	sql := `WITH upd AS (
	UPDATE certificates SET status = 'revoked', revoked_at = ` + at + `, revocation_reason = ` + reason + `
	WHERE identity = ` + identity + ` AND status = 'active' AND not_after >= ` + at + `
	RETURNING serial, fingerprint, profile
), ev AS (
	INSERT INTO events (` + sqlstore.Names(eventCols) + `, leaf_index)
	SELECT ` + strings.Join(values, ", ") + `, ` + nextLeaf + ` + u.n - 1
	FROM (SELECT *, row_number() OVER (ORDER BY serial) AS n FROM upd) u
	ORDER BY u.n
	RETURNING seq, serial, fingerprint, profile, leaf_index
)
SELECT serial, fingerprint, profile, seq, leaf_index FROM ev ORDER BY seq`
	args := func(e *sqlstore.EventRow) []any {
		all := e.Args()
		out := make([]any, 0, len(keep)+3)
		for _, i := range keep {
			out = append(out, all[i])
		}
		return out
	}
	return sql, args
}()

// denySQL adds the identity after the event to the deny list with its
// event, or nothing when it is there already (seq NULL).
var denySQL = func() string {
	identity := param(nEvent+2, "text")
	return `WITH ev AS (
	INSERT INTO events (` + eventInsert + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, ` + leafHash + `
	WHERE NOT EXISTS (SELECT 1 FROM denied_identities WHERE identity = ` + identity + `)
	RETURNING seq, leaf_index
), ins AS (
	INSERT INTO denied_identities (identity, at, actor, detail, event_seq)
	SELECT ` + identity + `, ` + eventParam("at") + `, ` + eventParam("actor") + `, ` + eventParam("detail") + `, ev.seq FROM ev
	RETURNING identity
)
SELECT (SELECT seq FROM ev), (SELECT leaf_index FROM ev)`
}()

// allowSQL takes the identity after the event off the deny list with its
// event, or nothing when it was not there (seq NULL).
var allowSQL = `WITH del AS (
	DELETE FROM denied_identities WHERE identity = ` + param(nEvent+2, "text") + ` RETURNING identity
), ev AS (
	INSERT INTO events (` + eventInsert + `)
	SELECT ` + eventValues + `, ` + nextLeaf + `, ` + leafHash + ` FROM del
	RETURNING seq, leaf_index
)
SELECT (SELECT seq FROM ev), (SELECT leaf_index FROM ev)`

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
func (s *Store) commit(ctx context.Context, batch []*groupcommit.Item[sqlstore.Op]) error {
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
		args := op.Event.Args()
		switch op.Kind {
		case sqlstore.KindIssuance:
			args = append(args, op.Event.LeafHash)
			if t := op.Token; t != nil {
				args = append(args, t.JTI, t.ExpiresAt)
			} else {
				args = append(args, nil, nil)
			}
			args = append(args, op.Cert.Args()...)
			b.Queue(issueSQL, append(args, op.Names, op.Renews)...)
		case sqlstore.KindEvent:
			b.Queue(insertEvent, append(args, op.Event.LeafHash)...)
		case sqlstore.KindRevoke:
			b.Queue(revokeSQL, append(args, op.Event.LeafHash, op.Serial, op.RevokedAt, op.Reason)...)
		case sqlstore.KindRevokeIdentity:
			b.Queue(revokeIdentitySQL, append(revokeIdentityArgs(&op.Event), op.Identity, op.RevokedAt, op.Reason)...)
		case sqlstore.KindDeny:
			b.Queue(denySQL, append(args, op.Event.LeafHash, op.Identity)...)
		case sqlstore.KindAllow:
			b.Queue(allowSQL, append(args, op.Event.LeafHash, op.Identity)...)
		case sqlstore.KindGuarded:
			// Written after the pipeline, one savepoint each (guarded).
		default:
			return fmt.Errorf("postgres: unknown operation kind %d", op.Kind)
		}
		notify = notify || sqlstore.RevocationKind(op.Kind)
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
	for _, it := range batch {
		if it.Op.Kind != sqlstore.KindGuarded {
			continue
		}
		if err := guarded(ctx, tx, it); err != nil {
			return fmt.Errorf("postgres: write batch of %d, nothing was committed: %w", len(batch), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// A commit whose answer was lost may have happened: say no more
		// than that it failed.
		return fmt.Errorf("postgres: commit batch of %d: %w", len(batch), err)
	}
	return nil
}

// hashRevokedIdentities fills in the leaf hashes of the events an identity
// revocation wrote, one per certificate: which certificates those are is
// only known inside the transaction, so their hashes are made here, before
// commit, in one more round trip for the rare batch that has any.
func hashRevokedIdentities(ctx context.Context, tx pgx.Tx, batch []*groupcommit.Item[sqlstore.Op]) error {
	b := &pgx.Batch{}
	for _, it := range batch {
		op := &it.Op
		if op.Kind != sqlstore.KindRevokeIdentity {
			continue
		}
		for i := range op.Revoked {
			r := &op.Revoked[i]
			r.LeafHash = op.Event.ForCertificate(r.Serial, r.Fingerprint, r.Profile).LeafHash
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

// guarded writes a KindGuarded item inside a savepoint of the batch's
// transaction, after the pipeline and under its advisory lock, so that its
// event takes the next leaf index like any other. A statement that fails,
// or changes other than the rows it expects, rolls the item back alone.
func guarded(ctx context.Context, tx pgx.Tx, it *groupcommit.Item[sqlstore.Op]) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	op := &it.Op
	for _, g := range op.Guards {
		tag, err := sp.Exec(ctx, g.SQL, g.Args...)
		if err != nil || g.Want >= 0 && tag.RowsAffected() != g.Want {
			if rerr := sp.Rollback(ctx); rerr != nil {
				return rerr
			}
			if err != nil {
				it.Err = fmt.Errorf("postgres: %s: %w", op.What, err)
			} else {
				it.Err = op.Refuse(&dialect, sqlstore.RefusedConflict)
			}
			return nil
		}
	}
	if err := sp.QueryRow(ctx, insertEvent, append(op.Event.Args(), op.Event.LeafHash)...).Scan(&op.Seq, &op.LeafIndex); err != nil {
		return err
	}
	return sp.Commit(ctx)
}

func readResults(br pgx.BatchResults, batch []*groupcommit.Item[sqlstore.Op], notify bool) error {
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("take the event order lock: %w", err)
	}
	for _, it := range batch {
		op := &it.Op
		switch op.Kind {
		case sqlstore.KindGuarded:
			continue // not in the pipeline
		case sqlstore.KindIssuance:
			var used, dup, stale bool
			var seq, leafIndex *int64
			var denied *string
			if err := br.QueryRow().Scan(&used, &dup, &seq, &leafIndex, &denied, &stale); err != nil {
				return err
			}
			switch {
			case seq != nil && leafIndex != nil:
				op.Seq, op.LeafIndex = *seq, *leafIndex
			case denied != nil:
				op.Denied = *denied
				it.Err = op.Refuse(&dialect, sqlstore.RefusedDenied)
			case stale:
				it.Err = op.Refuse(&dialect, sqlstore.RefusedRenewedRevoked)
			case op.Token != nil && (used || !dup):
				// Used before this statement, or taken by a concurrent
				// transaction that committed while we waited on the conflict.
				it.Err = op.Refuse(&dialect, sqlstore.RefusedTokenUsed)
			default:
				it.Err = op.Refuse(&dialect, sqlstore.RefusedCertExists)
			}
		case sqlstore.KindEvent:
			if err := br.QueryRow().Scan(&op.Seq, &op.LeafIndex); err != nil {
				return err
			}
		case sqlstore.KindRevoke:
			var seq, leafIndex *int64
			var status *string
			if err := br.QueryRow().Scan(&seq, &status, &leafIndex); err != nil {
				return err
			}
			switch {
			case seq != nil && leafIndex != nil:
				op.Seq, op.LeafIndex = *seq, *leafIndex
			case status == nil:
				it.Err = op.Refuse(&dialect, sqlstore.RefusedNotFound)
			default:
				it.Err = op.Refuse(&dialect, sqlstore.RefusedAlreadyRevoked)
			}
		case sqlstore.KindRevokeIdentity:
			rows, err := br.Query()
			if err != nil {
				return err
			}
			op.Revoked = op.Revoked[:0]
			for rows.Next() {
				var r sqlstore.RevokedRow
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
		case sqlstore.KindDeny, sqlstore.KindAllow:
			var seq, leafIndex *int64
			if err := br.QueryRow().Scan(&seq, &leafIndex); err != nil {
				return err
			}
			switch {
			case seq != nil && leafIndex != nil:
				op.Seq, op.LeafIndex = *seq, *leafIndex
			case op.Kind == sqlstore.KindDeny:
				it.Err = op.Refuse(&dialect, sqlstore.RefusedAlreadyDenied)
			default:
				it.Err = op.Refuse(&dialect, sqlstore.RefusedNotFound)
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
