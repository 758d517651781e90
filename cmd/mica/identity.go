package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"
)

func runIdentityDeny(ctx context.Context, env *cliEnv, args []string) error {
	return runIdentityChange(ctx, env, args, "deny")
}

func runIdentityAllow(ctx context.Context, env *cliEnv, args []string) error {
	return runIdentityChange(ctx, env, args, "allow")
}

func runIdentityChange(ctx context.Context, env *cliEnv, args []string, verb string) error {
	fs := newFlags(env, "identity "+verb)
	var cf clientFlags
	cf.register(fs, env, true)
	reason := fs.String("reason", "", "why, for the audit record")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("identity %s takes one IDENTITY (a SPIFFE ID, DNS name or IP)", verb)
	}
	c, err := cf.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	change, done := c.Deny, "denied %s: it can be neither issued nor renewed (revoke its live certificates with `mica cert revoke --identity %[1]s`)\n"
	if verb == "allow" {
		change, done = c.Allow, "allowed %s again\n"
	}
	d, err := change(ctx, fs.Arg(0), *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, done, d.Identity)
	return nil
}

func runIdentityList(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "identity list")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.DeniedIdentities(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tDENIED AT\tBY\tREASON")
	for _, d := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Identity, d.At.UTC().Format(time.RFC3339), d.Actor, d.Reason)
	}
	return tw.Flush()
}
