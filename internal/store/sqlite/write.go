package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/groupcommit"
	"github.com/mica-pki/mica/internal/store/sqlstore"
)

// writeStmts are prepared once on the single writer connection.
type writeStmts struct {
	checks, useToken, unuseToken, insertEvent, insertCert, revoke, status *sql.Stmt
	supersedable, supersede, liveOfIdentity, insertDenial, deleteDenial   *sql.Stmt
	denialExists, nextLeaf                                                *sql.Stmt

	// leaf is the leaf index the next event of this batch gets.
	leaf int64
}

func (w *writeStmts) all() []**sql.Stmt {
	return []**sql.Stmt{&w.checks, &w.useToken, &w.unuseToken, &w.insertEvent, &w.insertCert, &w.supersedable, &w.supersede, &w.revoke, &w.status,
		&w.liveOfIdentity, &w.insertDenial, &w.deleteDenial, &w.denialExists, &w.nextLeaf}
}

func (w *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&w.checks, checksSQL},
		{&w.useToken, "INSERT INTO used_tokens (jti, expires_at, used_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"},
		{&w.unuseToken, "DELETE FROM used_tokens WHERE jti = ?"},
		{&w.insertEvent, insert("events", append(sqlstore.EventColumns(), sqlstore.Column{Name: "leaf_index"}, sqlstore.Column{Name: "leaf_hash"}))},
		{&w.nextLeaf, sqlstore.NextLeafIndex},
		{&w.insertCert, insert("certificates", sqlstore.CertColumns())},
		{&w.supersedable, supersedableSQL},
		{&w.supersede, "UPDATE certificates SET superseded_until = ? WHERE rowid = ?"},
		{&w.revoke, "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE serial = ? AND status = 'active'"},
		{&w.status, "SELECT status FROM certificates WHERE serial = ?"},
		{&w.liveOfIdentity, "SELECT serial, fingerprint, profile FROM certificates WHERE identity = ? AND status = 'active' AND not_after >= ? ORDER BY serial"},
		{&w.insertDenial, "INSERT INTO denied_identities (identity, at, actor, detail, event_seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"},
		{&w.deleteDenial, "DELETE FROM denied_identities WHERE identity = ?"},
		{&w.denialExists, "SELECT EXISTS (SELECT 1 FROM denied_identities WHERE identity = ?)"},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			w.close()
			return fmt.Errorf("sqlite: prepare %q: %w", p.sql, err)
		}
		*p.dst = st
	}
	return nil
}

// insert is an INSERT of one row into cols of table.
func insert(table string, cols []sqlstore.Column) string {
	return "INSERT INTO " + table + " (" + sqlstore.Names(cols) + ") VALUES (" + strings.Repeat("?, ", len(cols)-1) + "?)"
}

func (w *writeStmts) close() {
	for _, st := range w.all() {
		if *st != nil {
			(*st).Close()
		}
	}
}

// commit writes one batch in one transaction on the writer connection.
func (s *Store) commit(ctx context.Context, batch []*groupcommit.Item[sqlstore.Op]) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin batch: %w", err)
	}
	defer tx.Rollback()
	// Once BEGIN IMMEDIATE returns, the writer holds the database's write
	// lock: its statements wait for no other connection, and each is
	// short. They run without the batch's deadline, because the driver arms
	// an interrupt for every statement whose context can end (a goroutine
	// and a progress handler each time). The deadline still holds where a
	// wait can be long: the BEGIN above waits for the lock under it, a
	// guarded operation runs under it, and a commit after it refuses.
	short := context.WithoutCancel(ctx)
	var st writeStmts
	dst, src := st.all(), s.stmts.all()
	for i := range dst {
		*dst[i] = tx.StmtContext(short, *src[i])
	}
	// The single writer connection serialises batches, so the next index
	// read here stays ours until commit.
	if err := st.nextLeaf.QueryRowContext(short).Scan(&st.leaf); err != nil {
		return fmt.Errorf("sqlite: read the next audit leaf index, nothing was committed: %w", err)
	}
	for _, it := range batch {
		var err error
		switch it.Op.Kind {
		case sqlstore.KindIssuance:
			err = st.issue(short, it)
		case sqlstore.KindEvent:
			it.Op.Seq, it.Op.LeafIndex, err = st.event(short, &it.Op.Event)
		case sqlstore.KindRevoke:
			err = st.revokeOne(short, it)
		case sqlstore.KindRevokeIdentity:
			err = st.revokeIdentity(short, it)
		case sqlstore.KindDeny, sqlstore.KindAllow:
			err = st.denyOrAllow(short, it)
		case sqlstore.KindGuarded:
			err = st.guarded(ctx, tx, it)
		default:
			err = fmt.Errorf("unknown operation kind %d", it.Op.Kind)
		}
		if err != nil {
			return fmt.Errorf("sqlite: write batch of %d, nothing was committed: %w", len(batch), err)
		}
	}
	if err := tx.Commit(); err != nil {
		// A commit interrupted by the batch's deadline may have happened:
		// say no more than that it failed.
		return fmt.Errorf("sqlite: commit batch of %d: %w", len(batch), err)
	}
	return nil
}

// issue writes one issuance, or sets it.Err and leaves nothing behind when
// the item alone must fail: the deny list and the renewed certificate's
// status are checked first, then the token, then the certificate's
// uniqueness, and only then are the event and certificate written.
func (w *writeStmts) issue(ctx context.Context, it *groupcommit.Item[sqlstore.Op]) error {
	c := &it.Op.Cert
	t := it.Op.Token
	names, err := json.Marshal(it.Op.Names)
	if err != nil {
		return err
	}
	var denied, renewed sql.NullString
	var dup bool
	if err := w.checks.QueryRowContext(ctx, names, it.Op.Renews, c.Serial, c.Fingerprint).Scan(&denied, &renewed, &dup); err != nil {
		return err
	}
	switch {
	case denied.Valid:
		it.Op.Denied = denied.String
		it.Err = it.Op.Refuse(&dialect, sqlstore.RefusedDenied)
		return nil
	case it.Op.Renews != "" && renewed.String != string(store.StatusActive):
		// Revoked, or gone: either way not a certificate to renew.
		it.Err = it.Op.Refuse(&dialect, sqlstore.RefusedRenewedRevoked)
		return nil
	}
	if t != nil {
		// Consuming the token is the check: a conflict means it was used
		// before, by an earlier transaction or earlier in this batch.
		res, err := w.useToken.ExecContext(ctx, t.JTI, t.ExpiresAt, t.UsedAt)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			it.Err = it.Op.Refuse(&dialect, sqlstore.RefusedTokenUsed)
			return nil
		}
	}
	if dup {
		// A retry of an issuance that did commit, or a serial reused by
		// mistake: either way it must fail alone, leaving no trace.
		if t != nil {
			if _, err := w.unuseToken.ExecContext(ctx, t.JTI); err != nil {
				return err
			}
		}
		it.Err = it.Op.Refuse(&dialect, sqlstore.RefusedCertExists)
		return nil
	}
	seq, leafIndex, err := w.event(ctx, &it.Op.Event)
	if err != nil {
		return err
	}
	it.Op.Seq, it.Op.LeafIndex = seq, leafIndex
	if _, err = w.insertCert.ExecContext(ctx, append(c.Args(), seq)...); err != nil {
		return err
	}
	if c.Status != string(store.StatusActive) {
		return nil
	}
	return w.supersedePredecessors(ctx, c, seq)
}

// supersedePredecessors raises superseded_until on the live predecessors
// of c, recorded as event seq, as PostgreSQL's certificates_supersede
// trigger does (migration 0016). Here it is done by the writer, not a
// trigger, so that the certificate's INSERT needs no statement journal
// (migration 0018); and the rows are found first, then updated one by
// one by rowid, because an UPDATE that searches the index its change
// moves rows out of collects them in a temporary table and journals every
// page it writes. Most issuances find one predecessor or none.
func (w *writeStmts) supersedePredecessors(ctx context.Context, c *sqlstore.CertRow, seq int64) error {
	rows, err := w.supersedable.QueryContext(ctx, c.Identity, c.NotBefore, seq, c.NotAfter)
	if err != nil {
		return err
	}
	var found []int64
	for rows.Next() {
		var rowid int64
		if err := rows.Scan(&rowid); err != nil {
			rows.Close()
			return err
		}
		found = append(found, rowid)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, rowid := range found {
		if _, err := w.supersede.ExecContext(ctx, c.NotAfter, rowid); err != nil {
			return err
		}
	}
	return nil
}

// supersedableSQL finds the live predecessors a new active certificate
// supersedes: of its identity (?1), not yet superseded for the rest of
// their life, still valid when it starts (?2), recorded before it (?3),
// and superseded until before its end (?4).
const supersedableSQL = `SELECT rowid FROM certificates
WHERE identity = ?1 AND status = 'active' AND superseded_until < not_after
  AND not_after > ?2 AND event_seq < ?3 AND superseded_until < ?4`

// checksSQL reads, in one statement, what decides whether an issuance may
// be written in the state its transaction sees: the first of its names
// (?1, a JSON array) on the deny list, the status of the certificate it
// renews (?2; NULL when that is unknown), and whether its serial (?3) or
// fingerprint (?4) is recorded already. The token is consumed between the
// checks and the writes; no check reads the used tokens.
const checksSQL = `SELECT
  (SELECT denied_identities.identity FROM json_each(?1) AS name CROSS JOIN denied_identities ON denied_identities.identity = name.value LIMIT 1),
  (SELECT status FROM certificates WHERE serial = ?2),
  EXISTS (SELECT 1 FROM certificates WHERE serial = ?3) OR EXISTS (SELECT 1 FROM certificates WHERE fingerprint = ?4)`

func (w *writeStmts) event(ctx context.Context, e *sqlstore.EventRow) (seq, leafIndex int64, err error) {
	res, err := w.insertEvent.ExecContext(ctx, append(e.Args(), w.leaf, e.LeafHash)...)
	if err != nil {
		return 0, 0, err
	}
	if seq, err = res.LastInsertId(); err != nil {
		return 0, 0, err
	}
	// Advance only after the insert: a failed item writes no event and
	// takes no index, so the indexes stay contiguous.
	w.leaf++
	return seq, w.leaf - 1, nil
}

func (w *writeStmts) revokeOne(ctx context.Context, it *groupcommit.Item[sqlstore.Op]) error {
	op := &it.Op
	res, err := w.revoke.ExecContext(ctx, op.RevokedAt, op.Reason, op.Serial)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		var status string
		err := w.status.QueryRowContext(ctx, op.Serial).Scan(&status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			it.Err = op.Refuse(&dialect, sqlstore.RefusedNotFound)
			return nil
		case err != nil:
			return err
		}
		it.Err = op.Refuse(&dialect, sqlstore.RefusedAlreadyRevoked)
		return nil
	}
	op.Seq, op.LeafIndex, err = w.event(ctx, &op.Event)
	return err
}

func (w *writeStmts) revokeIdentity(ctx context.Context, it *groupcommit.Item[sqlstore.Op]) error {
	op := &it.Op
	rows, err := w.liveOfIdentity.QueryContext(ctx, op.Identity, op.RevokedAt)
	if err != nil {
		return err
	}
	var live []sqlstore.RevokedRow
	for rows.Next() {
		var r sqlstore.RevokedRow
		if err := rows.Scan(&r.Serial, &r.Fingerprint, &r.Profile); err != nil {
			rows.Close()
			return err
		}
		live = append(live, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	op.Revoked = op.Revoked[:0]
	for _, r := range live {
		if _, err := w.revoke.ExecContext(ctx, op.RevokedAt, op.Reason, r.Serial); err != nil {
			return err
		}
		// Each certificate's event differs, so its leaf hash is made here.
		ev := op.Event.ForCertificate(r.Serial, r.Fingerprint, r.Profile)
		if r.Seq, r.LeafIndex, err = w.event(ctx, &ev); err != nil {
			return err
		}
		r.LeafHash = ev.LeafHash
		op.Revoked = append(op.Revoked, r)
	}
	return nil
}

func (w *writeStmts) denyOrAllow(ctx context.Context, it *groupcommit.Item[sqlstore.Op]) error {
	op := &it.Op
	if op.Kind == sqlstore.KindAllow {
		res, err := w.deleteDenial.ExecContext(ctx, op.Identity)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			it.Err = op.Refuse(&dialect, sqlstore.RefusedNotFound)
			return nil
		}
		op.Seq, op.LeafIndex, err = w.event(ctx, &op.Event)
		return err
	}
	// A denial that exists already must leave no event, so check before
	// writing either; the event comes first so the denial can name it.
	var exists bool
	if err := w.denialExists.QueryRowContext(ctx, op.Identity).Scan(&exists); err != nil {
		return err
	}
	if exists {
		it.Err = op.Refuse(&dialect, sqlstore.RefusedAlreadyDenied)
		return nil
	}
	seq, leafIndex, err := w.event(ctx, &op.Event)
	if err != nil {
		return err
	}
	op.Seq, op.LeafIndex = seq, leafIndex
	_, err = w.insertDenial.ExecContext(ctx, op.Identity, op.Event.At, op.Event.Actor, op.Event.Detail, seq)
	return err
}

// guarded writes a KindGuarded item inside a savepoint, so that the item
// can fail alone: a statement that fails, or changes other than the rows
// it expects, rolls the item back and the batch goes on.
func (w *writeStmts) guarded(ctx context.Context, tx *sql.Tx, it *groupcommit.Item[sqlstore.Op]) error {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT guarded"); err != nil {
		return err
	}
	fail := func(itemErr error) error {
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO guarded"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "RELEASE guarded"); err != nil {
			return err
		}
		it.Err = itemErr
		return nil
	}
	for _, g := range it.Op.Guards {
		res, err := tx.ExecContext(ctx, g.SQL, g.Args...)
		if err != nil {
			return fail(fmt.Errorf("sqlite: %s: %w", it.Op.What, err))
		}
		if g.Want >= 0 {
			if n, err := res.RowsAffected(); err != nil || n != g.Want {
				return fail(it.Op.Refuse(&dialect, sqlstore.RefusedConflict))
			}
		}
	}
	seq, leafIndex, err := w.event(ctx, &it.Op.Event)
	if err != nil {
		return err
	}
	it.Op.Seq, it.Op.LeafIndex = seq, leafIndex
	_, err = tx.ExecContext(ctx, "RELEASE guarded")
	return err
}
