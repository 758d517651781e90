package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/bench"
)

// runBenchAll runs the benchmarks the speed targets are judged by, each in
// a process of its own (and, for enrollment and renewal, against a server
// in yet another: the figure over HTTPS is the headline), and prints their
// figures in one table.
func runBenchAll(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench all")
	concurrency := fs.Int("concurrency", 64, "requests in flight for enroll and renew")
	duration := fs.Duration("duration", 10*time.Second, "how long enroll and renew are measured")
	live := fs.Int("live", 100_000, "live certificates for the scale figures (the targets are set at 1000000)")
	db := fs.String("db", "", "postgres:// URL of an empty database (default: SQLite)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 || *live < 1 {
		return usageError("--concurrency and --live must be at least 1 and --duration positive")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	load := []string{"--concurrency", strconv.Itoa(*concurrency), "--duration", duration.String(), "--spawn"}
	scale := []string{"--live", strconv.Itoa(*live), "--revoked", strconv.Itoa(max(*live/10, 1))}
	if *db != "" {
		load = append(load, "--db", *db)
		scale = append(scale, "--db", *db)
	}
	var sum bench.Summary
	var issue bench.IssueResult
	if cmd, err := runBenchChild(ctx, env, exe, "issue", load, &issue); err != nil {
		sum.AddError("enroll", err)
	} else {
		sum.AddIssue(&issue, cmd)
	}
	var renew bench.RenewResult
	if cmd, err := runBenchChild(ctx, env, exe, "renew", load, &renew); err != nil {
		sum.AddError("renew", err)
	} else {
		sum.AddRenew(&renew, cmd)
	}
	var rev bench.RevocationResult
	if cmd, err := runBenchChild(ctx, env, exe, "revocation", nil, &rev); err != nil {
		sum.AddError("revocation feed", err)
	} else {
		sum.AddRevocation(&rev, cmd)
	}
	var sc bench.ScaleResult
	if _, err := runBenchChild(ctx, env, exe, "scale", scale, &sc); err != nil {
		sum.AddError("scale", err)
	} else {
		sum.AddScale(&sc)
	}
	sum.Note = "Each benchmark ran in a process of its own, one after another; enroll and renew against a server spawned in another process " +
		"(server CPU read from /proc). The machine's 1-minute load average is given with each figure: compare figures taken at like loads."
	if err := printBench(env, *asJSON, &sum, sum.WriteText); err != nil {
		return err
	}
	if len(sum.Errors) > 0 {
		return fmt.Errorf("bench all: %d of 4 benchmarks failed (see above): run each alone to see why", len(sum.Errors))
	}
	return nil
}

// runBenchChild runs `mica bench <name> <args> --json` and decodes its
// result into out; it returns the command as a user would type it.
func runBenchChild(ctx context.Context, env *cliEnv, exe, name string, args []string, out any) (string, error) {
	args = append([]string{"bench", name}, args...)
	command := "mica " + strings.Join(args, " ")
	fmt.Fprintf(env.stderr, "bench all: running %s\n", command)
	cmd := exec.CommandContext(ctx, exe, append(args, "--json")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return command, fmt.Errorf("%s: %w: %s", command, err, lastLines(stderr.String(), 5))
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return command, fmt.Errorf("%s printed no result: %w", command, err)
	}
	return command, nil
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
