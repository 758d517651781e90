package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/policy"
)

func runPolicyCheck(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "policy check")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("policy check takes one CONFIG file")
	}
	cfg, err := loadConfig(fs.Arg(0))
	if err != nil {
		return err
	}
	eng, err := policy.New(cfg.Config)
	if err != nil {
		return err
	}
	for _, name := range eng.Profiles() {
		p, _ := eng.Profile(name)
		fmt.Fprintf(env.stdout, "profile %-14s ttl %s (max %s)  spiffe %v  dns %v  ips %v  usage %v\n",
			name, duration.Format(p.DefaultTTL), duration.Format(p.MaxTTL), p.SPIFFE, p.DNS, p.IPs, p.ExtKeyUsage)
		if p.MaxRenewalChain > 0 {
			fmt.Fprintf(env.stdout, "  renewals for %s from the first enrollment, then a new token\n", duration.Format(p.MaxRenewalChain))
		}
		for _, c := range p.CoversReserved {
			fmt.Fprintf(env.stdout, "  note: %s; mica's reserved names are refused under this profile all the same\n", c)
		}
	}
	fmt.Fprintf(env.stdout, "%s: ok (%d profiles, %d admins)\n", fs.Arg(0), len(eng.Profiles()), len(cfg.Admins))
	return nil
}

func runPolicyTest(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "policy test")
	config := fs.String("config", "", "config file whose profiles are tested")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *config == "" || fs.NArg() != 1 {
		return usageError("policy test needs --config CONFIG and one CASES file")
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	eng, err := policy.New(cfg.Config)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("reading test cases: %w", err)
	}
	cases, err := policy.LoadTestCases(data)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range policy.RunTests(eng, cases) {
		if r.Pass {
			fmt.Fprintf(env.stdout, "PASS  %s: %s\n", r.Name, r.Got)
			continue
		}
		failed++
		fmt.Fprintf(env.stdout, "FAIL  %s: %s\n", r.Name, r.Message)
	}
	fmt.Fprintf(env.stdout, "%d passed, %d failed\n", len(cases)-failed, failed)
	if failed > 0 {
		return errors.New("policy test: some cases failed")
	}
	return nil
}
