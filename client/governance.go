package client

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Approval is a request held for approvers (GET /v1/approvals/{id}).
type Approval struct {
	ID         string         `json:"id"`
	Action     string         `json:"action"`
	Params     map[string]any `json:"params"`
	ParamsHash string         `json:"params_sha256"`
	Profile    string         `json:"profile,omitempty"`
	Requester  string         `json:"requester"`
	Reason     string         `json:"reason,omitempty"`
	Required   int            `json:"required"`
	Approvers  string         `json:"approvers"`
	Status     string         `json:"status"` // pending, approved, rejected, executed, failed, expired
	CreatedAt  time.Time      `json:"created_at"`
	ExpiresAt  time.Time      `json:"expires_at"`
	DecidedAt  *time.Time     `json:"decided_at,omitempty"`
	Result     string         `json:"result,omitempty"`
	Votes      []ApprovalVote `json:"votes,omitempty"`
}

// ApprovalVote is one approver's decision.
type ApprovalVote struct {
	Approver string    `json:"approver"`
	Approve  bool      `json:"approve"`
	At       time.Time `json:"at"`
	Comment  string    `json:"comment,omitempty"`
}

// ApprovalList is GET /v1/approvals.
type ApprovalList struct {
	Approvals []Approval `json:"approvals"`
}

// DecisionRequest is the body of POST /v1/approvals/{id}/approve|reject.
type DecisionRequest struct {
	Comment string `json:"comment,omitempty"`
}

// PendingError is what a request that was held for approvers returns
// (HTTP 202): not a refusal, a request waiting for others.
type PendingError struct {
	Approval Approval
}

func (e *PendingError) Error() string {
	return fmt.Sprintf("mica: held for approval: request %s (%s) needs %d approval(s) by holders of the %s role; see `mica approvals show %s`",
		e.Approval.ID, e.Approval.Action, e.Approval.Required, e.Approval.Approvers, e.Approval.ID)
}

// GrantRequest is the body of POST /v1/roles/grants.
type GrantRequest struct {
	Identity   string `json:"identity"`
	Role       string `json:"role"`
	For        string `json:"for"`
	Reason     string `json:"reason"`
	BreakGlass bool   `json:"break_glass,omitempty"`
}

// RoleGrant is a role given for a time.
type RoleGrant struct {
	ID         string     `json:"id"`
	Identity   string     `json:"identity"`
	Role       string     `json:"role"`
	GrantedBy  string     `json:"granted_by"`
	Reason     string     `json:"reason"`
	BreakGlass bool       `json:"break_glass,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// RoleGrantList is GET /v1/roles/grants.
type RoleGrantList struct {
	Grants []RoleGrant `json:"grants"`
}

// PolicyProposal is the body of POST /v1/policy/versions.
type PolicyProposal struct {
	Document string `json:"document"`
	Reason   string `json:"reason,omitempty"`
}

// PolicyVersion is one version of the policy document.
type PolicyVersion struct {
	Version     int64      `json:"version"`
	Hash        string     `json:"sha256"`
	ProposedBy  string     `json:"proposed_by"`
	Status      string     `json:"status"` // proposed, active, superseded, rejected
	CreatedAt   time.Time  `json:"created_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	Document    string     `json:"document,omitempty"`
}

// PolicyVersionList is GET /v1/policy/versions.
type PolicyVersionList struct {
	Versions []PolicyVersion `json:"versions"`
	// Applied is the version the answering server applies.
	Applied int64 `json:"applied"`
}

// RotateRequest is the body of POST /v1/ca/rotate.
type RotateRequest struct {
	Step string `json:"step"` // prepare or activate
}

// RotateResponse says what a rotation step did.
type RotateResponse struct {
	Result string `json:"result"`
}

// Approvals lists approval requests (status "" for all).
func (c *Client) Approvals(ctx context.Context, status string) ([]Approval, error) {
	var out ApprovalList
	err := c.do(ctx, "GET", "/v1/approvals?status="+url.QueryEscape(status), "", nil, &out)
	return out.Approvals, err
}

// Approval reads one approval request.
func (c *Client) Approval(ctx context.Context, id string) (*Approval, error) {
	var out Approval
	err := c.do(ctx, "GET", "/v1/approvals/"+url.PathEscape(id), "", nil, &out)
	return &out, err
}

// Decide approves or rejects an approval request.
func (c *Client) Decide(ctx context.Context, id string, approve bool, comment string) (*Approval, error) {
	verb := "reject"
	if approve {
		verb = "approve"
	}
	var out Approval
	err := c.do(ctx, "POST", "/v1/approvals/"+url.PathEscape(id)+"/"+verb, "", DecisionRequest{Comment: comment}, &out)
	return &out, err
}

// GrantRole gives a role for a time.
func (c *Client) GrantRole(ctx context.Context, req GrantRequest) (*RoleGrant, error) {
	var out RoleGrant
	err := c.do(ctx, "POST", "/v1/roles/grants", "", req, &out)
	return &out, err
}

// RevokeGrant ends a grant.
func (c *Client) RevokeGrant(ctx context.Context, id string) error {
	return c.do(ctx, "POST", "/v1/roles/grants/"+url.PathEscape(id)+"/revoke", "", struct{}{}, nil)
}

// Grants lists role grants (in force, or all).
func (c *Client) Grants(ctx context.Context, identity string, all bool) ([]RoleGrant, error) {
	var out RoleGrantList
	err := c.do(ctx, "GET", "/v1/roles/grants?identity="+url.QueryEscape(identity)+"&all="+strconv.FormatBool(all), "", nil, &out)
	return out.Grants, err
}

// ProposePolicy proposes a policy document.
func (c *Client) ProposePolicy(ctx context.Context, doc, reason string) (*PolicyVersion, error) {
	var out PolicyVersion
	err := c.do(ctx, "POST", "/v1/policy/versions", "", PolicyProposal{Document: doc, Reason: reason}, &out)
	return &out, err
}

// PolicyVersions lists policy versions, newest first.
func (c *Client) PolicyVersions(ctx context.Context) (*PolicyVersionList, error) {
	var out PolicyVersionList
	err := c.do(ctx, "GET", "/v1/policy/versions", "", nil, &out)
	return &out, err
}

// PolicyVersion reads one version with its document; 0 is the active one.
func (c *Client) PolicyVersion(ctx context.Context, version int64) (*PolicyVersion, error) {
	var out PolicyVersion
	path := "/v1/policy/versions/active"
	if version != 0 {
		path = "/v1/policy/versions/" + strconv.FormatInt(version, 10)
	}
	err := c.do(ctx, "GET", path, "", nil, &out)
	return &out, err
}

// ActivatePolicy activates a version (a proposal, or an earlier one to roll back).
func (c *Client) ActivatePolicy(ctx context.Context, version int64) (*PolicyVersion, error) {
	var out PolicyVersion
	err := c.do(ctx, "POST", "/v1/policy/versions/"+strconv.FormatInt(version, 10)+"/activate", "", struct{}{}, &out)
	return &out, err
}

// RejectPolicy rejects a proposed version.
func (c *Client) RejectPolicy(ctx context.Context, version int64) error {
	return c.do(ctx, "POST", "/v1/policy/versions/"+strconv.FormatInt(version, 10)+"/reject", "", struct{}{}, nil)
}

// Rotate forces a CA rotation step.
func (c *Client) Rotate(ctx context.Context, step string) (*RotateResponse, error) {
	var out RotateResponse
	err := c.do(ctx, "POST", "/v1/ca/rotate", "", RotateRequest{Step: step}, &out)
	return &out, err
}
