package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/textdiff"
)

// The governance commands: approvals, role grants and policy versions.
// Each is a client of the API; the server decides who may.

func approvalsCommands() map[string]command {
	return map[string]command{
		"list": {summary: "list approval requests (yours, or all with approval:read)", run: runApprovalsList},
		"show": {summary: "show one request: its exact parameters, votes and result", args: "ID", run: runApprovalsShow},
		"approve": {summary: "approve a request someone else made", args: "ID", run: func(ctx context.Context, env *cliEnv, args []string) error {
			return runApprovalsDecide(ctx, env, args, true)
		}},
		"reject": {summary: "reject a request someone else made", args: "ID", run: func(ctx context.Context, env *cliEnv, args []string) error {
			return runApprovalsDecide(ctx, env, args, false)
		}},
	}
}

func roleCommands() map[string]command {
	return map[string]command{
		"grant":  {summary: "give an administrator a role for a time (--break-glass: yourself, at once)", args: "IDENTITY ROLE", run: runRoleGrant},
		"revoke": {summary: "end a grant before its time", args: "GRANT", run: runRoleRevoke},
		"list":   {summary: "list the grants in force (--all: every grant)", run: runRoleList},
	}
}

// printPending explains a request held for approvers; other errors pass.
func printPending(env *cliEnv, err error) error {
	var pe *client.PendingError
	if !errors.As(err, &pe) {
		return err
	}
	a := pe.Approval
	fmt.Fprintf(env.stdout, "held for approval: request %s (%s) needs %d approval(s) by holders of the %s role, until %s\n",
		a.ID, a.Action, a.Required, a.Approvers, a.ExpiresAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(env.stdout, "approvers run: mica approvals approve %s\n", a.ID)
	if a.Action == "token.create" {
		fmt.Fprintf(env.stdout, "then collect the token with the same command and --approval %s\n", a.ID)
	}
	return nil
}

func runApprovalsList(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "approvals list")
	status := fs.String("status", "", "only requests in this status: pending, approved, rejected, executed, failed, expired")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.Approvals(ctx, *status)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tACTION\tSTATUS\tVOTES\tREQUESTER\tCREATED\tEXPIRES")
	for _, a := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d %s\t%s\t%s\t%s\n", a.ID, a.Action, a.Status, len(a.Votes), a.Required, a.Approvers,
			a.Requester, a.CreatedAt.UTC().Format(time.RFC3339), a.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func runApprovalsShow(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "approvals show")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if fs.NArg() != 1 {
		return usageError("approvals show takes one request ID")
	}
	a, err := c.Approval(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	printApproval(env, a)
	return nil
}

func printApproval(env *cliEnv, a *client.Approval) {
	params, _ := json.MarshalIndent(a.Params, "  ", "  ")
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Request:\t%s\n", a.ID)
	fmt.Fprintf(tw, "Action:\t%s\n", a.Action)
	fmt.Fprintf(tw, "Status:\t%s\n", a.Status)
	fmt.Fprintf(tw, "Requester:\t%s\n", a.Requester)
	if a.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", a.Reason)
	}
	fmt.Fprintf(tw, "Needs:\t%d approval(s) by holders of the %s role\n", a.Required, a.Approvers)
	fmt.Fprintf(tw, "Created:\t%s (expires %s)\n", a.CreatedAt.UTC().Format(time.RFC3339), a.ExpiresAt.UTC().Format(time.RFC3339))
	for _, v := range a.Votes {
		verb := "approved"
		if !v.Approve {
			verb = "rejected"
		}
		fmt.Fprintf(tw, "Vote:\t%s %s at %s %s\n", v.Approver, verb, v.At.UTC().Format(time.RFC3339), v.Comment)
	}
	if a.Result != "" {
		fmt.Fprintf(tw, "Result:\t%s\n", a.Result)
	}
	fmt.Fprintf(tw, "Parameters:\t(sha256 %s)\n", a.ParamsHash)
	tw.Flush()
	fmt.Fprintf(env.stdout, "  %s\n", params)
}

func runApprovalsDecide(ctx context.Context, env *cliEnv, args []string, approve bool) error {
	verb := map[bool]string{true: "approve", false: "reject"}[approve]
	fs := newFlags(env, "approvals "+verb)
	var cf clientFlags
	cf.register(fs, env, true)
	comment := fs.String("comment", "", "why, for the audit record")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("approvals %s takes one request ID", verb)
	}
	c, err := cf.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	a, err := c.Decide(ctx, fs.Arg(0), approve, *comment)
	if err != nil {
		return err
	}
	printApproval(env, a)
	return nil
}

func runRoleGrant(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "role grant")
	forD := fs.String("for", "", "how long the grant lasts, like 2h or 1d (required)")
	reason := fs.String("reason", "", "why, for the audit record (required)")
	breakGlass := fs.Bool("break-glass", false, "grant the role to yourself at once, without approvals (role:break-glass; alerts)")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if fs.NArg() != 2 || *forD == "" || *reason == "" {
		return usageError("role grant takes IDENTITY ROLE --for DURATION --reason TEXT")
	}
	g, err := c.GrantRole(ctx, client.GrantRequest{Identity: fs.Arg(0), Role: fs.Arg(1), For: *forD, Reason: *reason, BreakGlass: *breakGlass})
	if err != nil {
		return printPending(env, err)
	}
	fmt.Fprintf(env.stdout, "grant %s: %s holds %s until %s\n", g.ID, g.Identity, g.Role, g.ExpiresAt.UTC().Format(time.RFC3339))
	return nil
}

func runRoleRevoke(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "role revoke")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if fs.NArg() != 1 {
		return usageError("role revoke takes one GRANT id (see `mica role list`)")
	}
	if err := c.RevokeGrant(ctx, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "grant %s ended\n", fs.Arg(0))
	return nil
}

func runRoleList(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "role list")
	identity := fs.String("identity", "", "only this administrator's grants")
	all := fs.Bool("all", false, "every grant, ended ones too")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	gs, err := c.Grants(ctx, *identity, *all)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GRANT\tIDENTITY\tROLE\tUNTIL\tBY\tREASON")
	for _, g := range gs {
		role := g.Role
		if g.BreakGlass {
			role += " (break-glass)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, g.Identity, role, g.ExpiresAt.UTC().Format(time.RFC3339), g.GrantedBy, g.Reason)
	}
	return tw.Flush()
}

func runPolicyPropose(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "policy propose")
	reason := fs.String("reason", "", "why, for the audit record")
	config := fs.String("config", "", "config file whose policy (profiles, admins, roles, approvals) is proposed (or give it as the argument; default: mica.yaml in --data-dir)")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	cfg, _, err := policyConfig(*config, cf.dataDir, fs.Args())
	if err != nil {
		return err
	}
	doc := cfg.doc
	if act, err := c.PolicyVersion(ctx, 0); err == nil {
		fmt.Fprintf(env.stdout, "changes against the active version %d:\n%s", act.Version, textdiff.Lines(act.Document, string(doc)))
	}
	v, err := c.ProposePolicy(ctx, string(doc), *reason)
	if err != nil {
		return printPending(env, err)
	}
	switch v.Status {
	case "active":
		fmt.Fprintf(env.stdout, "policy version %d is active (sha256 %s); every server applies it within seconds\n", v.Version, v.Hash)
	default:
		fmt.Fprintf(env.stdout, "policy version %d is %s (sha256 %s): someone with policy:approve activates it with `mica policy activate %d`\n",
			v.Version, v.Status, v.Hash, v.Version)
	}
	return nil
}

func runPolicyHistory(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "policy history")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.PolicyVersions(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSTATUS\tPROPOSED BY\tCREATED\tSHA256")
	for _, v := range list.Versions {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", v.Version, v.Status, v.ProposedBy, v.CreatedAt.UTC().Format(time.RFC3339), v.Hash)
	}
	fmt.Fprintf(tw, "(this server applies version %d)\n", list.Applied)
	return tw.Flush()
}

func runPolicyShow(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "policy show")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	version, err := versionArg(fs.Args(), true)
	if err != nil {
		return err
	}
	v, err := c.PolicyVersion(ctx, version)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "# policy version %d, %s, sha256 %s\n%s", v.Version, v.Status, v.Hash, v.Document)
	return nil
}

func runPolicyActivate(ctx context.Context, env *cliEnv, args []string) error {
	return activatePolicy(ctx, env, args, "policy activate")
}

func runPolicyRollback(ctx context.Context, env *cliEnv, args []string) error {
	return activatePolicy(ctx, env, args, "policy rollback")
}

// activatePolicy activates one version: a proposal, or an earlier one to
// roll back to (the same approvable action, policy.change).
func activatePolicy(ctx context.Context, env *cliEnv, args []string, name string) error {
	fs := newFlags(env, name)
	var cf clientFlags
	cf.register(fs, env, true)
	if err := parse(env, fs, args); err != nil {
		return err
	}
	version, err := versionArg(fs.Args(), false)
	if err != nil {
		return err
	}
	c, err := cf.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	v, err := c.ActivatePolicy(ctx, version)
	if err != nil {
		return printPending(env, err)
	}
	fmt.Fprintf(env.stdout, "policy version %d is active; every server applies it within seconds\n", v.Version)
	return nil
}

func runPolicyReject(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "policy reject")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	version, err := versionArg(fs.Args(), false)
	if err != nil {
		return err
	}
	if err := c.RejectPolicy(ctx, version); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "policy version %d rejected\n", version)
	return nil
}

// versionArg reads the one VERSION argument (none: the active one, where
// allowed).
func versionArg(args []string, activeOK bool) (int64, error) {
	if len(args) == 0 && activeOK {
		return 0, nil
	}
	if len(args) != 1 {
		return 0, usageError("give one policy VERSION (see `mica policy history`)")
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(args[0], "v"), 10, 64)
	if err != nil || n < 1 {
		return 0, usageError("policy version %q is not a positive whole number (see `mica policy history`)", args[0])
	}
	return n, nil
}
