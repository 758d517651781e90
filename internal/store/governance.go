package store

import (
	"context"
	"time"
)

// The records of governance: requests that wait for approvers, time-bound
// role grants, and versions of the policy. Every change to them is recorded
// together with its audit event (the ev argument), in one transaction.

// ApprovalStatus is where an approval request stands.
type ApprovalStatus string

const (
	ApprovalPending  ApprovalStatus = "pending"  // waiting for approvers
	ApprovalApproved ApprovalStatus = "approved" // the threshold is met; runs next (or, for a token, when its requester collects it)
	ApprovalRejected ApprovalStatus = "rejected" // an approver said no
	ApprovalExecuted ApprovalStatus = "executed" // it ran, once
	ApprovalFailed   ApprovalStatus = "failed"   // it ran and failed (Result says why)
	ApprovalExpired  ApprovalStatus = "expired"  // nobody decided in time
)

// Approval is a sensitive request held for approvers, with its exact
// parameters and their hash, so that what runs is what was approved.
type Approval struct {
	ID         string
	Action     string
	Params     []byte // canonical JSON of the request's parameters
	ParamsHash string // hex SHA-256 of Params
	Profile    string // the profile the request is about, if any
	Requester  string
	Reason     string
	Required   int    // distinct approvers needed
	Approvers  string // the role whose holders may decide
	Status     ApprovalStatus
	CreatedAt  time.Time
	ExpiresAt  time.Time
	DecidedAt  time.Time
	Result     string // what running it said (a serial, an error)
	Votes      []Vote // in the order cast
}

// Vote is one approver's decision.
type Vote struct {
	Approver string
	Approve  bool
	At       time.Time
	Comment  string
}

// ApprovalFilter selects approval requests; zero fields select all.
type ApprovalFilter struct {
	Status    ApprovalStatus
	Requester string
	Limit     int // 0 means 100, at most 1000
}

// RoleGrant is a role given to an identity for a time.
type RoleGrant struct {
	ID         string
	Identity   string
	Role       string
	GrantedBy  string
	Reason     string
	BreakGlass bool // granted without approvals, in an emergency
	CreatedAt  time.Time
	ExpiresAt  time.Time
	RevokedAt  time.Time // zero while not revoked
}

// PolicyStatus is where a policy version stands.
type PolicyStatus string

const (
	PolicyProposed   PolicyStatus = "proposed"   // waiting for approval
	PolicyActive     PolicyStatus = "active"     // what every server applies
	PolicySuperseded PolicyStatus = "superseded" // was active
	PolicyRejected   PolicyStatus = "rejected"   // never applied
)

// PolicyVersion is one version of the policy document.
type PolicyVersion struct {
	Version     int64
	Document    []byte
	Hash        string // hex SHA-256 of Document
	ProposedBy  string
	Status      PolicyStatus
	CreatedAt   time.Time
	ActivatedAt time.Time
}

// Governance keeps approvals, grants and policy versions. ErrConflict when
// the state changed meanwhile (a second vote by the same approver, a
// request no longer pending); ErrNotFound for an unknown id.
type Governance interface {
	CreateApproval(ctx context.Context, a *Approval, ev *Event) error
	// Vote adds one approver's decision to a pending request.
	Vote(ctx context.Context, id string, v Vote, ev *Event) error
	// SetApprovalStatus moves a request from one status to another.
	SetApprovalStatus(ctx context.Context, id string, from, to ApprovalStatus, result string, at time.Time, ev *Event) error
	// Approval reads one request with its votes.
	Approval(ctx context.Context, id string) (Approval, error)
	// Approvals lists requests, newest first, without their votes.
	Approvals(ctx context.Context, f ApprovalFilter) ([]Approval, error)

	CreateGrant(ctx context.Context, g *RoleGrant, ev *Event) error
	RevokeGrant(ctx context.Context, id string, at time.Time, ev *Event) error
	// Grants lists the grants in force at at (every one when at is zero)
	// for identity (every identity when empty).
	Grants(ctx context.Context, identity string, at time.Time) ([]RoleGrant, error)

	// ProposePolicy stores a new version as proposed and sets its Version.
	ProposePolicy(ctx context.Context, v *PolicyVersion, ev *Event) error
	// ActivatePolicy makes a proposed (or earlier) version the active one,
	// superseding the version active before, in one transaction.
	ActivatePolicy(ctx context.Context, version int64, at time.Time, ev *Event) error
	// RejectPolicy marks a proposed version rejected.
	RejectPolicy(ctx context.Context, version int64, ev *Event) error
	// PolicyVersion reads one version; ActivePolicy the active one
	// (ErrNotFound when none is).
	PolicyVersion(ctx context.Context, version int64) (PolicyVersion, error)
	ActivePolicy(ctx context.Context) (PolicyVersion, error)
	// PolicyVersions lists versions, newest first, without documents.
	PolicyVersions(ctx context.Context, limit int) ([]PolicyVersion, error)
}
