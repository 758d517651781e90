package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Policy as code that goes live safely: the policy document (profiles,
// admins, roles, approvals) lives in the database with a version. A
// proposal is checked (compiled) first; activating it is the approvable
// action policy.change; every server follows the active version within
// its poll interval, without a restart. Rolling back is activating an
// earlier version.

// CompiledPolicy is a policy document made ready to apply.
type CompiledPolicy struct {
	Policy Policy
	Access *AccessModel
}

// PolicyCompiler turns a policy document into what the authority applies,
// or says every problem with it. The binary supplies it (it knows the
// document's format and the server settings the policy depends on).
type PolicyCompiler func(doc []byte) (CompiledPolicy, error)

// maxPolicyDocument bounds a proposed document.
const maxPolicyDocument = 1 << 20

func docHash(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}

// ProposePolicy stores doc as a new policy version, after checking that it
// compiles, then asks to activate it: at once when the proposer may and
// no approval is needed, otherwise as an approval request (the returned
// error is then KindApprovalPending) or left proposed for someone with
// policy:approve.
func (a *Authority) ProposePolicy(ctx context.Context, p Principal, doc []byte, reason string) (store.PolicyVersion, error) {
	if err := a.Authorize(p, ActPolicyPropose, Resource{}); err != nil {
		return store.PolicyVersion{}, err
	}
	if a.compile == nil {
		return store.PolicyVersion{}, newError(KindInternal, nil, "this server cannot compile policy documents")
	}
	if len(doc) == 0 || len(doc) > maxPolicyDocument {
		return store.PolicyVersion{}, newError(KindInvalid, nil, "a policy document is 1 byte to 1 MiB, not %d bytes", len(doc))
	}
	if _, err := a.compile(doc); err != nil {
		return store.PolicyVersion{}, newError(KindInvalid, err, "the proposed policy does not check: %v", err)
	}
	hash := docHash(doc)
	if act, err := a.store.ActivePolicy(ctx); err == nil && act.Hash == hash {
		return act, newError(KindConflict, nil, "the proposed policy is the active one (version %d): nothing to change", act.Version)
	}
	now := a.now()
	v := store.PolicyVersion{Document: doc, Hash: hash, ProposedBy: p.Name, CreatedAt: now}
	ev := store.Event{Time: now, Actor: p.Name, Action: store.ActionPolicyProposed, Outcome: "ok", Detail: "sha256 " + hash + ": " + reason}
	if err := a.store.ProposePolicy(ctx, &v, &ev); err != nil {
		return v, newError(KindInternal, err, "could not store the proposed policy: %v", err)
	}
	if a.Authorize(p, ActPolicyChange, Resource{}) != nil {
		return v, nil // proposed; someone with policy:approve activates it
	}
	act, err := a.ActivatePolicy(ctx, p, v.Version)
	if err != nil {
		return v, err
	}
	return act, nil
}

// ActivatePolicy makes a stored version the active one (a proposal, or an
// earlier version to roll back to). It is the approvable action
// policy.change.
func (a *Authority) ActivatePolicy(ctx context.Context, p Principal, version int64) (store.PolicyVersion, error) {
	if err := a.Authorize(p, ActPolicyChange, Resource{}); err != nil {
		return store.PolicyVersion{}, err
	}
	v, err := a.store.PolicyVersion(ctx, version)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return v, newError(KindNotFound, err, "no policy version %d: see `mica policy history`", version)
	case err != nil:
		return v, newError(KindInternal, err, "could not read policy version %d: %v", version, err)
	case v.Status == store.PolicyActive:
		return v, newError(KindConflict, nil, "policy version %d is already active", version)
	case v.Status == store.PolicyRejected:
		return v, newError(KindConflict, nil, "policy version %d was rejected: propose it again", version)
	}
	compiled, err := a.compile(v.Document)
	if err != nil {
		return v, newError(KindInvalid, err, "policy version %d no longer checks: %v", version, err)
	}
	if err := a.gate(ctx, p, ActPolicyChange, Resource{}, policyParams{Version: version, Hash: v.Hash}, ""); err != nil {
		return v, err
	}
	now := a.now()
	ev := store.Event{Time: now, Actor: p.Name, Action: store.ActionPolicyActivated, Outcome: "ok",
		Detail: fmt.Sprintf("version %d, sha256 %s", version, v.Hash)}
	if p.Approval != "" {
		ev.Detail += " (approval request " + p.Approval + ")"
	}
	if err := a.store.ActivatePolicy(ctx, version, now, &ev); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return v, newError(KindConflict, err, "policy version %d changed meanwhile: see `mica policy history`", version)
		}
		return v, newError(KindInternal, err, "could not activate policy version %d: %v", version, err)
	}
	a.apply(ctx, version, compiled)
	v.Status, v.ActivatedAt = store.PolicyActive, now
	return v, nil
}

// RejectPolicy marks a proposed version rejected (policy:approve).
func (a *Authority) RejectPolicy(ctx context.Context, p Principal, version int64) error {
	if err := a.Authorize(p, ActPolicyChange, Resource{}); err != nil {
		return err
	}
	ev := store.Event{Time: a.now(), Actor: p.Name, Action: store.ActionPolicyRejected, Outcome: "ok", Detail: fmt.Sprintf("version %d", version)}
	err := a.store.RejectPolicy(ctx, version, &ev)
	if errors.Is(err, store.ErrConflict) {
		return newError(KindConflict, err, "policy version %d is not a pending proposal: see `mica policy history`", version)
	}
	if err != nil {
		return newError(KindInternal, err, "could not reject policy version %d: %v", version, err)
	}
	return nil
}

// PolicyHistory lists versions, newest first (auditors and up).
func (a *Authority) PolicyHistory(ctx context.Context, p Principal, limit int) ([]store.PolicyVersion, error) {
	if err := a.Authorize(p, ActPolicyRead, Resource{}); err != nil {
		return nil, err
	}
	vs, err := a.store.PolicyVersions(ctx, limit)
	if err != nil {
		return nil, newError(KindInternal, err, "could not list policy versions: %v", err)
	}
	return vs, nil
}

// PolicyDocument reads one version with its document; version 0 is the
// active one (auditors and up).
func (a *Authority) PolicyDocument(ctx context.Context, p Principal, version int64) (store.PolicyVersion, error) {
	if err := a.Authorize(p, ActPolicyRead, Resource{}); err != nil {
		return store.PolicyVersion{}, err
	}
	var v store.PolicyVersion
	var err error
	if version == 0 {
		v, err = a.store.ActivePolicy(ctx)
	} else {
		v, err = a.store.PolicyVersion(ctx, version)
	}
	if errors.Is(err, store.ErrNotFound) {
		return v, newError(KindNotFound, err, "no such policy version: see `mica policy history`")
	}
	if err != nil {
		return v, newError(KindInternal, err, "could not read the policy: %v", err)
	}
	return v, nil
}

// apply swaps in a compiled policy for every request from now on.
func (a *Authority) apply(ctx context.Context, version int64, c CompiledPolicy) {
	a.SetPolicy(c.Policy)
	a.SetAccess(c.Access)
	a.policyVersion.Store(version)
	a.log.LogAttrs(ctx, slog.LevelInfo, "policy applied", slog.Int64("version", version))
}

// PolicyVersion is the version this server applies (0: the file's, before
// the database held one).
func (a *Authority) PolicyVersion() int64 { return a.policyVersion.Load() }

// SeedPolicy makes doc the first active version when the database holds
// none, and applies whatever version is active. A server starts with it,
// so that every server applies the database's policy, not its own file's.
// It reports whether the active version differs from doc.
func (a *Authority) SeedPolicy(ctx context.Context, doc []byte) (differs bool, err error) {
	sys := Principal{Name: SystemPrincipal}
	if _, err := a.store.ActivePolicy(ctx); errors.Is(err, store.ErrNotFound) {
		if _, perr := a.ProposePolicy(ctx, sys, doc, "the first policy, from the config file"); perr != nil {
			// Another server seeding at the same moment may have won;
			// otherwise the error stands.
			if _, aerr := a.store.ActivePolicy(ctx); aerr != nil {
				return false, perr
			}
		}
	}
	if err := a.FollowPolicyOnce(ctx); err != nil {
		return false, err
	}
	act, err := a.store.ActivePolicy(ctx)
	if err != nil {
		return false, newError(KindInternal, err, "could not read the active policy: %v", err)
	}
	return act.Hash != docHash(doc), nil
}

// FollowPolicyOnce applies the database's active version if this server
// applies another.
func (a *Authority) FollowPolicyOnce(ctx context.Context) error {
	act, err := a.store.ActivePolicy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return newError(KindInternal, err, "could not read the active policy: %v", err)
	}
	if act.Version == a.policyVersion.Load() {
		return nil
	}
	c, err := a.compile(act.Document)
	if err != nil {
		return newError(KindInternal, err, "active policy version %d does not check on this server: %v", act.Version, err)
	}
	a.apply(ctx, act.Version, c)
	return nil
}

// FollowPolicy applies every newly active version until ctx ends, checking
// every interval: the way a policy change reaches every server without a
// restart.
func (a *Authority) FollowPolicy(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := a.FollowPolicyOnce(ctx); err != nil && ctx.Err() == nil {
				a.log.LogAttrs(ctx, slog.LevelError, "could not follow the active policy", slog.String("error", err.Error()))
			}
		}
	}
}

// RotateFunc forces one step of a CA rotation ("prepare", "activate",
// "abort", and the same for the root); package rotation supplies it.
type RotateFunc func(ctx context.Context, step string) (string, error)

// Rotate forces a CA rotation step (ca:rotate, approvable).
func (a *Authority) Rotate(ctx context.Context, p Principal, step string) (string, error) {
	if err := a.Authorize(p, ActCARotate, Resource{}); err != nil {
		return "", err
	}
	if a.rotate == nil {
		return "", newError(KindInternal, nil, "this server does not rotate its CA")
	}
	switch step {
	case "prepare", "activate", "abort", "prepare-root", "activate-root", "abort-root":
	default:
		return "", newError(KindInvalid, nil, "rotation step %q: use prepare, activate, abort, prepare-root, activate-root or abort-root", step)
	}
	if err := a.gate(ctx, p, ActCARotate, Resource{}, rotateParams{Step: step}, ""); err != nil {
		return "", err
	}
	out, err := a.rotate(ctx, step)
	var refused *Error
	if errors.As(err, &refused) {
		return "", refused // the CA's state does not allow the step
	}
	if err != nil {
		return "", newError(KindInternal, err, "rotation step %s failed: %v", step, err)
	}
	return out, nil
}
