package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// The governance endpoints: approval requests, role grants, policy
// versions and forced CA rotation steps, thin translations to the
// authority, which decides who may and what needs approvers. A request
// held for approvers is answered 202 Accepted with the request, its id in
// the Mica-Approval header.

func (s *server) governanceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/approvals", s.authed(s.listApprovals))
	mux.HandleFunc("GET /v1/approvals/{id}", s.authed(s.getApproval))
	mux.HandleFunc("POST /v1/approvals/{id}/approve", s.authed(s.decide(true)))
	mux.HandleFunc("POST /v1/approvals/{id}/reject", s.authed(s.decide(false)))
	mux.HandleFunc("POST /v1/roles/grants", s.authed(s.grantRole))
	mux.HandleFunc("GET /v1/roles/grants", s.authed(s.listGrants))
	mux.HandleFunc("POST /v1/roles/grants/{id}/revoke", s.authed(s.revokeGrant))
	mux.HandleFunc("POST /v1/policy/versions", s.authed(s.proposePolicy))
	mux.HandleFunc("GET /v1/policy/versions", s.authed(s.policyVersions))
	mux.HandleFunc("GET /v1/policy/versions/{version}", s.authed(s.policyVersion))
	mux.HandleFunc("POST /v1/policy/versions/{version}/activate", s.authed(s.activatePolicy))
	mux.HandleFunc("POST /v1/policy/versions/{version}/reject", s.authed(s.rejectPolicy))
	mux.HandleFunc("POST /v1/ca/rotate", s.authed(s.rotate))
}

// WireApproval shapes an approval request as the API answers it.
func WireApproval(a store.Approval) client.Approval {
	out := client.Approval{ID: a.ID, Action: a.Action, ParamsHash: a.ParamsHash, Profile: a.Profile, Requester: a.Requester,
		Reason: a.Reason, Required: a.Required, Approvers: a.Approvers, Status: string(a.Status), CreatedAt: a.CreatedAt,
		ExpiresAt: a.ExpiresAt, Result: a.Result}
	json.Unmarshal(a.Params, &out.Params)
	if !a.DecidedAt.IsZero() {
		d := a.DecidedAt
		out.DecidedAt = &d
	}
	for _, v := range a.Votes {
		out.Votes = append(out.Votes, client.ApprovalVote{Approver: v.Approver, Approve: v.Approve, At: v.At, Comment: v.Comment})
	}
	return out
}

// pending answers a request held for approvers; it reports whether err was
// one.
func pending(w http.ResponseWriter, err error) bool {
	e, ok := err.(*authority.Error)
	if !ok || e.Kind != authority.KindApprovalPending || e.Pending == nil {
		return false
	}
	w.Header().Set("Mica-Approval", e.Pending.ID)
	w.Header().Set("Location", "/v1/approvals/"+e.Pending.ID)
	writeJSON(w, http.StatusAccepted, WireApproval(*e.Pending))
	return true
}

func (s *server) listApprovals(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := newQuery(r)
	f := store.ApprovalFilter{Status: store.ApprovalStatus(q.v.Get("status")), Requester: q.v.Get("requester"),
		Limit: int(q.int("limit", 0, 1000))}
	switch f.Status {
	case "", store.ApprovalPending, store.ApprovalApproved, store.ApprovalRejected, store.ApprovalExecuted, store.ApprovalFailed, store.ApprovalExpired:
	default:
		q.errs = append(q.errs, fmt.Sprintf("status %q is not one of pending, approved, rejected, executed, failed, expired", f.Status))
	}
	if q.fail(w) {
		return
	}
	list, err := s.cfg.Authority.Approvals(r.Context(), p, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.ApprovalList{Approvals: make([]client.Approval, 0, len(list))}
	for _, a := range list {
		out.Approvals = append(out.Approvals, WireApproval(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getApproval(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	a, err := s.cfg.Authority.Approval(r.Context(), p, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, WireApproval(a))
}

func (s *server) decide(approve bool) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, p authority.Principal) {
		var req client.DecisionRequest
		if !decode(w, r, &req) {
			return
		}
		a, err := s.cfg.Authority.Decide(r.Context(), p, r.PathValue("id"), approve, req.Comment)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, WireApproval(a))
	}
}

func wireGrant(g store.RoleGrant) client.RoleGrant {
	out := client.RoleGrant{ID: g.ID, Identity: g.Identity, Role: g.Role, GrantedBy: g.GrantedBy, Reason: g.Reason,
		BreakGlass: g.BreakGlass, CreatedAt: g.CreatedAt, ExpiresAt: g.ExpiresAt}
	if !g.RevokedAt.IsZero() {
		t := g.RevokedAt
		out.RevokedAt = &t
	}
	return out
}

func (s *server) grantRole(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.GrantRequest
	if !decode(w, r, &req) {
		return
	}
	d, err := duration.Parse(req.For)
	if err != nil || len(req.For) > maxTTLLen {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("for %q is not a duration like 2h or 1d", req.For))
		return
	}
	g, err := s.cfg.Authority.GrantRole(r.Context(), p, authority.GrantRequest{Identity: req.Identity, Role: authority.Role(req.Role),
		For: d, Reason: req.Reason, BreakGlass: req.BreakGlass})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wireGrant(g))
}

func (s *server) listGrants(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := r.URL.Query()
	gs, err := s.cfg.Authority.Grants(r.Context(), p, q.Get("identity"), q.Get("all") == "true")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.RoleGrantList{Grants: make([]client.RoleGrant, 0, len(gs))}
	for _, g := range gs {
		out.Grants = append(out.Grants, wireGrant(g))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) revokeGrant(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	if err := s.cfg.Authority.RevokeGrant(r.Context(), p, r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func wirePolicy(v store.PolicyVersion, withDoc bool) client.PolicyVersion {
	out := client.PolicyVersion{Version: v.Version, Hash: v.Hash, ProposedBy: v.ProposedBy, Status: string(v.Status), CreatedAt: v.CreatedAt}
	if !v.ActivatedAt.IsZero() {
		t := v.ActivatedAt
		out.ActivatedAt = &t
	}
	if withDoc {
		out.Document = string(v.Document)
	}
	return out
}

func (s *server) proposePolicy(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.PolicyProposal
	if !decode(w, r, &req) {
		return
	}
	v, err := s.cfg.Authority.ProposePolicy(r.Context(), p, []byte(req.Document), req.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wirePolicy(v, false))
}

func (s *server) policyVersions(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	vs, err := s.cfg.Authority.PolicyHistory(r.Context(), p, 100)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.PolicyVersionList{Versions: make([]client.PolicyVersion, 0, len(vs)), Applied: s.cfg.Authority.PolicyVersion()}
	for _, v := range vs {
		out.Versions = append(out.Versions, wirePolicy(v, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// pathVersion reads {version}: a number, or "active" (0) where allowed.
func pathVersion(w http.ResponseWriter, r *http.Request, activeOK bool) (int64, bool) {
	s := r.PathValue("version")
	if activeOK && s == "active" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("policy version %q is not a positive whole number%s", s,
			strings.Repeat(" (or active)", map[bool]int{true: 1}[activeOK])))
		return 0, false
	}
	return n, true
}

func (s *server) policyVersion(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	n, ok := pathVersion(w, r, true)
	if !ok {
		return
	}
	v, err := s.cfg.Authority.PolicyDocument(r.Context(), p, n)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wirePolicy(v, true))
}

func (s *server) activatePolicy(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	n, ok := pathVersion(w, r, false)
	if !ok {
		return
	}
	v, err := s.cfg.Authority.ActivatePolicy(r.Context(), p, n)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wirePolicy(v, false))
}

func (s *server) rejectPolicy(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	n, ok := pathVersion(w, r, false)
	if !ok {
		return
	}
	if err := s.cfg.Authority.RejectPolicy(r.Context(), p, n); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) rotate(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.RotateRequest
	if !decode(w, r, &req) {
		return
	}
	out, err := s.cfg.Authority.Rotate(r.Context(), p, req.Step)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.RotateResponse{Result: out})
}
