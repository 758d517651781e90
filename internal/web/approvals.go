package web

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// The approvals queue: what waits for approvers, with its exact
// parameters and their hash, the votes so far, and — for whom the
// authority would let decide — approve and reject. The rules (who may
// decide, that the requester may not, that each approver counts once, that
// it runs once at the threshold) are the authority's; the page only shows
// the buttons MayDecide allows, and Decide asks again.

type approvalsView struct {
	Pending []approvalRow
	Recent  []approvalRow
	Problem string
	Held    string // the id of the caller's request just held for approval
	Done    string
	// What the approvers govern: the policy versions (newest first) and
	// the version this server applies, and the role grants in force.
	// Shown to whom the authority lets read them.
	Policies       []store.PolicyVersion
	Applied        int64
	MayReadPolicy  bool
	Grants         []store.RoleGrant
	MayReadGrants  bool
	GovernanceNote string
}

type approvalRow struct {
	store.Approval
	Params    string
	Yes, No   int
	MayDecide bool
	Why       string // why this session may not decide it
}

var approvalID = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

func (c *Console) approvals(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, p := r.Context(), s.Principal
	v := approvalsView{Done: doneMessage(r.URL.Query().Get("done"))}
	if held := r.URL.Query().Get("held"); approvalID.MatchString(held) {
		v.Held = held
	}
	pending, err := c.cfg.Authority.Approvals(ctx, p, store.ApprovalFilter{Status: store.ApprovalPending, Limit: 200})
	if err != nil {
		if authority.KindOf(err) == authority.KindInternal {
			c.refuse(w, r, s, err)
			return
		}
		v.Problem = detail(err)
	}
	for _, ap := range pending {
		// The list leaves the votes out; the request itself has them.
		full, err := c.cfg.Authority.Approval(ctx, p, ap.ID)
		if err != nil {
			continue
		}
		v.Pending = append(v.Pending, c.approvalRow(p, full))
	}
	recent, err := c.cfg.Authority.Approvals(ctx, p, store.ApprovalFilter{Limit: 30})
	if err == nil {
		for _, ap := range recent {
			if ap.Status != store.ApprovalPending {
				v.Recent = append(v.Recent, c.approvalRow(p, ap))
			}
		}
	}
	c.governance(r, p, &v)
	c.render(w, r, s, http.StatusOK, "approvals", "Approvals", "approvals", v)
}

// governance fills in the policy versions and the role grants in force,
// each if the authority lets p read it.
func (c *Console) governance(r *http.Request, p authority.Principal, v *approvalsView) {
	ctx := r.Context()
	v.Applied = c.cfg.Authority.PolicyVersion()
	switch vs, err := c.cfg.Authority.PolicyHistory(ctx, p, 5); {
	case err == nil:
		v.Policies, v.MayReadPolicy = vs, true
	case authority.KindOf(err) != authority.KindForbidden:
		v.GovernanceNote = detail(err)
	}
	switch gs, err := c.cfg.Authority.Grants(ctx, p, "", false); {
	case err == nil:
		v.Grants, v.MayReadGrants = gs, true
	case authority.KindOf(err) != authority.KindForbidden:
		v.GovernanceNote = detail(err)
	}
}

func (c *Console) approvalRow(p authority.Principal, ap store.Approval) approvalRow {
	row := approvalRow{Approval: ap, Params: prettyJSON(ap.Params)}
	for _, vote := range ap.Votes {
		if vote.Approve {
			row.Yes++
		} else {
			row.No++
		}
	}
	if ap.Status == store.ApprovalPending {
		if err := c.cfg.Authority.MayDecide(p, ap); err != nil {
			row.Why = detail(err)
		} else {
			row.MayDecide = true
		}
	}
	return row
}

// decide approves or rejects a request; the authority decides whether
// this session may, and carries it out at the threshold.
func (c *Console) decide(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !approvalID.MatchString(id) {
		c.fail(w, r, s, http.StatusBadRequest, "That is not an approval request id.")
		return
	}
	var approve bool
	switch r.PostForm.Get("decision") {
	case "approve":
		approve = true
	case "reject":
	default:
		c.fail(w, r, s, http.StatusBadRequest, "Choose approve or reject.")
		return
	}
	comment := strings.TrimSpace(r.PostForm.Get("comment"))
	if _, err := c.cfg.Authority.Decide(r.Context(), s.Principal, id, approve, comment); err != nil {
		c.refuse(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/ui/approvals?done=decided", http.StatusSeeOther)
}
