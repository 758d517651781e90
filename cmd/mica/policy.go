package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/policy"
)

// oneOf is the value of a flag that may also be given as the one
// positional argument; giving both differently is a usage error.
func oneOf(flagName, flagValue string, args []string, what string) (string, error) {
	switch {
	case len(args) > 1:
		return "", usageError("give one %s", what)
	case len(args) == 1 && flagValue != "" && flagValue != args[0]:
		return "", usageError("--%s %s and the argument %s disagree: give one %s", flagName, flagValue, args[0], what)
	case len(args) == 1:
		return args[0], nil
	}
	return flagValue, nil
}

// policyConfig is the config a policy command reads: --config or the
// argument, else mica.yaml in the data directory.
func policyConfig(configFlag, dataDir string, args []string) (*Config, string, error) {
	path, err := oneOf("config", configFlag, args, "CONFIG file")
	if err != nil {
		return nil, "", err
	}
	if path == "" {
		path = dataPaths{dataDir}.config()
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, "", err
	}
	// What serve would refuse at start is refused here too.
	if err := cfg.settlePublicURL("", cfg.HTTPListen); err != nil {
		return nil, "", fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, path, nil
}

func runPolicyCheck(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "policy check")
	config := fs.String("config", "", "config file to check (or give it as the argument; default: mica.yaml in --data-dir)")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory whose mica.yaml is checked when no file is named (env MICA_DATA_DIR)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	cfg, path, err := policyConfig(*config, *dataDir, fs.Args())
	if err != nil {
		return err
	}
	eng := cfg.engine()
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
	fmt.Fprintf(env.stdout, "%s: ok (%d profiles, %d admins)\n", path, len(eng.Profiles()), len(cfg.Admins))
	return nil
}

func runPolicyTest(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "policy test")
	config := fs.String("config", "", "config file whose profiles are tested (default: mica.yaml in --data-dir)")
	casesFlag := fs.String("cases", "", "file of sample requests and the expected answers (or give it as the argument)")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory whose mica.yaml is tested when --config is not given (env MICA_DATA_DIR)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	casesPath, err := oneOf("cases", *casesFlag, fs.Args(), "CASES file")
	if err != nil {
		return err
	}
	if casesPath == "" {
		return usageError("policy test needs a CASES file: --cases cases.yaml (see internal/policy/testdata/cases.yaml)")
	}
	cfg, _, err := policyConfig(*config, *dataDir, nil)
	if err != nil {
		return err
	}
	eng := cfg.engine()
	data, err := os.ReadFile(casesPath)
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
