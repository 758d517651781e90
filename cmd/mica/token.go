package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/client"
)

func runTokenCreate(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "token create")
	id := fs.String("identity", "", "identity the token may enroll: a SPIFFE ID, DNS name or IP (comma-separated for several)")
	profile := fs.String("profile", "", "profile the certificate is issued under")
	ttl := fs.String("ttl", "10m", "how long the token stays usable (at most 24h)")
	cidr := fs.String("cidr", "", "only accept the token from this source network, e.g. 10.1.0.0/16")
	approval := fs.String("approval", "", "collect the token of an approved request (the same identity, profile, ttl and cidr, and its ID)")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if *id == "" || *profile == "" {
		return usageError("token create needs --identity and --profile")
	}
	resp, err := c.CreateToken(ctx, client.TokenRequest{Identity: *id, Profile: *profile, TTL: *ttl, CIDR: *cidr, Approval: *approval})
	var pe *client.PendingError
	if errors.As(err, &pe) {
		// Not a token: stdout stays empty for scripts that capture it.
		return fmt.Errorf("token create: held for approval: request %s needs %d approval(s) by holders of the %s role; "+
			"once approved, collect the token with the same command and --approval %s", pe.Approval.ID, pe.Approval.Required, pe.Approval.Approvers, pe.Approval.ID)
	}
	if err != nil {
		return err
	}
	// The token alone goes to stdout, so it can be captured by a script;
	// what it is goes to stderr.
	fmt.Fprintln(env.stdout, resp.Token)
	fmt.Fprintf(env.stderr, "token %s for %s (profile %s) expires %s; it works once: `mica cert issue --token … --out DIR`\n",
		resp.ID, resp.Identity, resp.Profile, resp.ExpiresAt.Local().Format(time.RFC3339))
	return nil
}
