package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Governance records (approvals, votes, role grants, policy versions) are
// written as KindGuarded ops: each a few conditional statements and the
// audit event, committed together by the engine's group committer.

// guarded queues a KindGuarded op and fills in ev's sequence and leaf.
func (s *Store) guarded(ctx context.Context, what string, ev *store.Event, guards ...Guard) (err error) {
	ctx, end := s.call(ctx, what, true)
	defer end(&err)
	if ev == nil {
		return s.errorf("%s: the event is nil; every governance change is audited", what)
	}
	op, err := eventOp(ev)
	if err != nil {
		return s.errorf("%s: %w", what, err)
	}
	op.Kind, op.What, op.Guards = KindGuarded, what, guards
	for i := range op.Guards {
		op.Guards[i].SQL = s.d.rebind(op.Guards[i].SQL)
	}
	return s.do(ctx, op, ev)
}

// CreateApproval implements store.Governance.
func (s *Store) CreateApproval(ctx context.Context, a *store.Approval, ev *store.Event) error {
	if a.ID == "" || a.Action == "" || a.Required < 1 || a.Approvers == "" {
		return s.errorf("create approval: id, action, approvers and a threshold of at least 1 are required")
	}
	a.Status = store.ApprovalPending
	return s.guarded(ctx, "create approval request "+a.ID, ev, Guard{Want: 1,
		SQL: `INSERT INTO approvals (id, action, params, params_hash, profile, requester, reason, required, approvers, status, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		Args: []any{a.ID, a.Action, a.Params, a.ParamsHash, a.Profile, a.Requester, a.Reason, a.Required, a.Approvers,
			string(a.Status), micros(a.CreatedAt), micros(a.ExpiresAt)}})
}

// Vote implements store.Governance: the vote is added only while the
// request is pending and once per approver.
func (s *Store) Vote(ctx context.Context, id string, v store.Vote, ev *store.Event) error {
	approve := 0
	if v.Approve {
		approve = 1
	}
	return s.guarded(ctx, "vote on approval request "+id, ev, Guard{Want: 1,
		SQL: `INSERT INTO approval_votes (approval_id, approver, approve, at, comment)
SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS BIGINT), CAST(? AS TEXT) WHERE EXISTS (SELECT 1 FROM approvals WHERE id = ? AND status = 'pending')
ON CONFLICT DO NOTHING`,
		Args: []any{id, v.Approver, approve, micros(v.At), v.Comment, id}})
}

// SetApprovalStatus implements store.Governance.
func (s *Store) SetApprovalStatus(ctx context.Context, id string, from, to store.ApprovalStatus, result string, at time.Time, ev *store.Event) error {
	return s.guarded(ctx, fmt.Sprintf("move approval request %s from %s to %s", id, from, to), ev, Guard{Want: 1,
		SQL:  `UPDATE approvals SET status = ?, result = ?, decided_at = ? WHERE id = ? AND status = ?`,
		Args: []any{string(to), result, micros(at), id, string(from)}})
}

const approvalColumns = `id, action, params, params_hash, profile, requester, reason, required, approvers, status, created_at, expires_at, decided_at, result`

func scanApproval(scan scanFunc) (store.Approval, error) {
	var a store.Approval
	var status string
	var created, expires, decided int64
	if err := scan(&a.ID, &a.Action, &a.Params, &a.ParamsHash, &a.Profile, &a.Requester, &a.Reason, &a.Required,
		&a.Approvers, &status, &created, &expires, &decided, &a.Result); err != nil {
		return a, err
	}
	a.Status = store.ApprovalStatus(status)
	a.CreatedAt, a.ExpiresAt = fromMicros(created), fromMicros(expires)
	if decided != 0 {
		a.DecidedAt = fromMicros(decided)
	}
	return a, nil
}

// Approval implements store.Governance.
func (s *Store) Approval(ctx context.Context, id string) (_ store.Approval, err error) {
	ctx, end := s.call(ctx, "read approval request "+id, false)
	defer end(&err)
	a, err := scanApproval(s.read.QueryRow(ctx, s.d.rebind("SELECT "+approvalColumns+" FROM approvals WHERE id = ?"), id).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return a, s.errorf("approval request %s: %w", id, store.ErrNotFound)
	case err != nil:
		return a, s.errorf("read approval request %s: %w", id, err)
	}
	err = queryEach(ctx, s.read, s.d.rebind("SELECT approver, approve, at, comment FROM approval_votes WHERE approval_id = ? ORDER BY at, approver"),
		[]any{id}, func(scan scanFunc) error {
			var v store.Vote
			var approve int
			var at int64
			if err := scan(&v.Approver, &approve, &at, &v.Comment); err != nil {
				return err
			}
			v.Approve, v.At = approve == 1, fromMicros(at)
			a.Votes = append(a.Votes, v)
			return nil
		})
	if err != nil {
		return a, s.errorf("read the votes on approval request %s: %w", id, err)
	}
	return a, nil
}

// Approvals implements store.Governance.
func (s *Store) Approvals(ctx context.Context, f store.ApprovalFilter) (_ []store.Approval, err error) {
	ctx, end := s.call(ctx, "list approval requests", false)
	defer end(&err)
	q, args := "SELECT "+approvalColumns+" FROM approvals WHERE 1 = 1", []any{}
	if f.Status != "" {
		q, args = q+" AND status = ?", append(args, string(f.Status))
	}
	if f.Requester != "" {
		q, args = q+" AND requester = ?", append(args, f.Requester)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += fmt.Sprintf(" ORDER BY created_at DESC, id LIMIT %d", min(limit, 1000))
	out, err := queryAll(ctx, s.read, s.d.rebind(q), args, scanApproval)
	if err != nil {
		return nil, s.errorf("list approval requests: %w", err)
	}
	return out, nil
}

// CreateGrant implements store.Governance.
func (s *Store) CreateGrant(ctx context.Context, g *store.RoleGrant, ev *store.Event) error {
	bg := 0
	if g.BreakGlass {
		bg = 1
	}
	return s.guarded(ctx, "grant role "+g.Role+" to "+g.Identity, ev, Guard{Want: 1,
		SQL: `INSERT INTO role_grants (id, identity, role, granted_by, reason, break_glass, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		Args: []any{g.ID, g.Identity, g.Role, g.GrantedBy, g.Reason, bg, micros(g.CreatedAt), micros(g.ExpiresAt)}})
}

// RevokeGrant implements store.Governance.
func (s *Store) RevokeGrant(ctx context.Context, id string, at time.Time, ev *store.Event) error {
	return s.guarded(ctx, "revoke role grant "+id, ev, Guard{Want: 1,
		SQL:  `UPDATE role_grants SET revoked_at = ? WHERE id = ? AND revoked_at = 0`,
		Args: []any{micros(at), id}})
}

// Grants implements store.Governance.
func (s *Store) Grants(ctx context.Context, identity string, at time.Time) (_ []store.RoleGrant, err error) {
	ctx, end := s.call(ctx, "list role grants", false)
	defer end(&err)
	q, args := `SELECT id, identity, role, granted_by, reason, break_glass, created_at, expires_at, revoked_at FROM role_grants WHERE 1 = 1`, []any{}
	if identity != "" {
		q, args = q+" AND identity = ?", append(args, identity)
	}
	if !at.IsZero() {
		q, args = q+" AND revoked_at = 0 AND created_at <= ? AND expires_at > ?", append(args, micros(at), micros(at))
	}
	q += " ORDER BY created_at DESC, id LIMIT 1000"
	out, err := queryAll(ctx, s.read, s.d.rebind(q), args, func(scan scanFunc) (store.RoleGrant, error) {
		var g store.RoleGrant
		var bg int
		var created, expires, revoked int64
		err := scan(&g.ID, &g.Identity, &g.Role, &g.GrantedBy, &g.Reason, &bg, &created, &expires, &revoked)
		g.BreakGlass, g.CreatedAt, g.ExpiresAt = bg == 1, fromMicros(created), fromMicros(expires)
		if revoked != 0 {
			g.RevokedAt = fromMicros(revoked)
		}
		return g, err
	})
	if err != nil {
		return nil, s.errorf("list role grants: %w", err)
	}
	return out, nil
}

// ProposePolicy implements store.Governance. The version is the next
// number; two proposals racing for it conflict, and the loser retries.
func (s *Store) ProposePolicy(ctx context.Context, v *store.PolicyVersion, ev *store.Event) (err error) {
	ctx, end := s.call(ctx, "propose a policy version", true)
	defer end(&err)
	for attempt := 0; ; attempt++ {
		var last int64
		if err := s.read.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM policy_versions").Scan(&last); err != nil {
			return s.errorf("read the last policy version: %w", err)
		}
		v.Version, v.Status = last+1, store.PolicyProposed
		e := *ev
		err := s.guarded(ctx, fmt.Sprintf("propose policy version %d", v.Version), &e, Guard{Want: 1,
			SQL: `INSERT INTO policy_versions (version, document, hash, proposed_by, status, created_at)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			Args: []any{v.Version, v.Document, v.Hash, v.ProposedBy, string(v.Status), micros(v.CreatedAt)}})
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		*ev = e
		return err
	}
}

// ActivatePolicy implements store.Governance.
func (s *Store) ActivatePolicy(ctx context.Context, version int64, at time.Time, ev *store.Event) error {
	return s.guarded(ctx, fmt.Sprintf("activate policy version %d", version), ev,
		Guard{Want: -1, SQL: `UPDATE policy_versions SET status = 'superseded' WHERE status = 'active' AND version <> ?`, Args: []any{version}},
		Guard{Want: 1, SQL: `UPDATE policy_versions SET status = 'active', activated_at = ? WHERE version = ? AND status IN ('proposed', 'superseded')`,
			Args: []any{micros(at), version}})
}

// RejectPolicy implements store.Governance.
func (s *Store) RejectPolicy(ctx context.Context, version int64, ev *store.Event) error {
	return s.guarded(ctx, fmt.Sprintf("reject policy version %d", version), ev, Guard{Want: 1,
		SQL: `UPDATE policy_versions SET status = 'rejected' WHERE version = ? AND status = 'proposed'`, Args: []any{version}})
}

const policyColumns = `version, hash, proposed_by, status, created_at, activated_at`

func scanPolicy(scan scanFunc, doc *[]byte) (store.PolicyVersion, error) {
	var v store.PolicyVersion
	var status string
	var created, activated int64
	dest := []any{&v.Version, &v.Hash, &v.ProposedBy, &status, &created, &activated}
	if doc != nil {
		dest = append(dest, doc)
	}
	if err := scan(dest...); err != nil {
		return v, err
	}
	v.Status, v.CreatedAt = store.PolicyStatus(status), fromMicros(created)
	if activated != 0 {
		v.ActivatedAt = fromMicros(activated)
	}
	return v, nil
}

func (s *Store) onePolicy(ctx context.Context, where string, args ...any) (store.PolicyVersion, error) {
	var doc []byte
	v, err := scanPolicy(s.read.QueryRow(ctx, s.d.rebind("SELECT "+policyColumns+", document FROM policy_versions WHERE "+where), args...).Scan, &doc)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return v, s.errorf("policy version (%s): %w", where, store.ErrNotFound)
	case err != nil:
		return v, s.errorf("read policy version: %w", err)
	}
	v.Document = doc
	return v, nil
}

// PolicyVersion implements store.Governance.
func (s *Store) PolicyVersion(ctx context.Context, version int64) (_ store.PolicyVersion, err error) {
	ctx, end := s.call(ctx, fmt.Sprintf("read policy version %d", version), false)
	defer end(&err)
	return s.onePolicy(ctx, "version = ?", version)
}

// ActivePolicy implements store.Governance.
func (s *Store) ActivePolicy(ctx context.Context) (_ store.PolicyVersion, err error) {
	ctx, end := s.call(ctx, "read the active policy", false)
	defer end(&err)
	return s.onePolicy(ctx, "status = 'active'")
}

// PolicyVersions implements store.Governance.
func (s *Store) PolicyVersions(ctx context.Context, limit int) (_ []store.PolicyVersion, err error) {
	ctx, end := s.call(ctx, "list policy versions", false)
	defer end(&err)
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	out, err := queryAll(ctx, s.read, fmt.Sprintf("SELECT %s FROM policy_versions ORDER BY version DESC LIMIT %d", policyColumns, limit), nil,
		func(scan scanFunc) (store.PolicyVersion, error) { return scanPolicy(scan, nil) })
	if err != nil {
		return nil, s.errorf("list policy versions: %w", err)
	}
	return out, nil
}
