// Command mica is the machine identity certificate authority: its server, its
// admin and client commands, and its benchmarks. This package only parses
// flags and the config file and wires the parts together; the rules live in
// internal/authority and internal/policy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"
)

// version is what this build calls itself: set with -ldflags
// "-X main.version=…", else read from the build information (see
// buildVersion).
var version string

func init() {
	if version == "" {
		version = buildVersion()
	}
}

// buildVersion names the build from what the Go toolchain recorded: the
// module version for `go install …@v1.2.3` (or its pseudo-version), else
// "devel" with the commit and a -dirty mark for a build from a checkout.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	v := "devel+" + rev[:min(12, len(rev))]
	if dirty {
		v += "-dirty"
	}
	return v
}

// printVersion prints the version line of `mica version` and `mica --version`.
func printVersion(env *cliEnv) {
	fmt.Fprintf(env.stdout, "mica %s %s\n", version, runtime.Version())
}

// command is one subcommand. Groups ("cert", "ca") hold subcommands.
type command struct {
	summary string
	// args names the positional arguments, for --help ("SERIAL").
	args string
	run  func(ctx context.Context, env *cliEnv, args []string) error
	sub  map[string]command
}

func commands() map[string]command {
	return map[string]command{
		"init":  {summary: "create a CA hierarchy, the first admin credential and a config", run: runInit},
		"serve": {summary: "run the HTTPS API (--dev: initialise and serve in one step)", run: runServe},
		"token": {summary: "one-time enrollment tokens", sub: map[string]command{
			"create": {summary: "create a token bound to one identity and profile", run: runTokenCreate},
		}},
		"cert": {summary: "certificates: issue, renew, list, inspect, revoke", sub: map[string]command{
			"issue":   {summary: "enroll with a token: make a key here, send a CSR, write the files", run: runCertIssue},
			"renew":   {summary: "renew over mTLS with the current certificate", run: runCertRenew},
			"list":    {summary: "list the inventory (admins, operators, auditors)", run: runCertList},
			"inspect": {summary: "show a certificate file or a serial in human terms", args: "FILE|SERIAL", run: runCertInspect},
			"revoke":  {summary: "revoke a certificate by serial or fingerprint, or every certificate of an identity", args: "[SERIAL]", run: runCertRevoke},
		}},
		"identity": {summary: "the deny list: identities that can be neither issued nor renewed", sub: map[string]command{
			"deny":  {summary: "put an identity on the deny list", args: "IDENTITY", run: runIdentityDeny},
			"allow": {summary: "take an identity off the deny list", args: "IDENTITY", run: runIdentityAllow},
			"list":  {summary: "show the deny list", run: runIdentityList},
		}},
		"agent":     {summary: "on each host: enroll once, renew forever, serve the SPIFFE Workload API", run: runAgent},
		"proxy":     {summary: "mTLS gateway: verify clients and forward to a plain-HTTP backend, or forward local plain HTTP over mTLS", run: runProxy},
		"approvals": {summary: "requests held for approvers: list, show, approve, reject", sub: approvalsCommands()},
		"role":      {summary: "time-bound role grants (and break-glass)", sub: roleCommands()},
		"policy": {summary: "check, test, propose and follow the policy (profiles, admins, roles, approvals)", sub: map[string]command{
			"check":    {summary: "validate a config file", args: "[CONFIG]", run: runPolicyCheck},
			"test":     {summary: "evaluate sample requests against a config", args: "[CASES]", run: runPolicyTest},
			"propose":  {summary: "propose the config's policy as a new version (shows the change; approvals may hold it)", args: "[CONFIG]", run: runPolicyPropose},
			"history":  {summary: "list the policy versions and which one this server applies", run: runPolicyHistory},
			"show":     {summary: "print a policy version's document (default: the active one)", args: "[VERSION]", run: runPolicyShow},
			"activate": {summary: "activate a proposed version", args: "VERSION", run: runPolicyActivate},
			"rollback": {summary: "activate an earlier version again", args: "VERSION", run: runPolicyRollback},
			"reject":   {summary: "reject a proposed version", args: "VERSION", run: runPolicyReject},
		}},
		"ca": {summary: "the CA: its rotation, and the offline-root ceremonies", sub: map[string]command{
			"status":               {summary: "the CA slots (prepared, active, retired, removed) and the next rotation steps", run: runCAStatus},
			"rotate":               {summary: "force a rotation step: --prepare or --activate (--root for the root)", run: runCARotate},
			"request-intermediate": {summary: "server side: make the intermediate key and CSR", run: runCARequestIntermediate},
			"sign-intermediate":    {summary: "offline root side: sign an intermediate CSR", run: runCASignIntermediate},
			"import-intermediate":  {summary: "server side: install the signed intermediate", run: runCAImportIntermediate},
			"root-crl":             {summary: "offline root side: sign the root's CRL (the intermediates it withdrew)", run: runCARootCRL},
			"new-root":             {summary: "offline root side: roll the root over (a new root, cross-signed both ways)", run: runCANewRoot},
			"import-root":          {summary: "server side: record the new root from the ceremony as the prepared root", run: runCAImportRoot},
		}},
		"audit":    {summary: "the tamper-evident audit log: tail, search, export, proof, verify, checkpoint", sub: auditCommands()},
		"discover": {summary: "find certificates deployed on TLS endpoints and in files, and put them in the inventory", sub: discoverCommands()},
		"webhook":  {summary: "webhook delivery: state of each endpoint, a new signing secret", sub: webhookCommands()},
		"console":  {summary: "the web console under /ui/: sign in with a one-time link", sub: consoleCommands()},
		"report":   {summary: "reports for the weekly routine: certificates expiring without a replacement", sub: reportCommands()},
		"bench": {summary: "measure throughput and latency", sub: map[string]command{
			"all":         {summary: "the figures the speed targets are judged by, in one table: enroll and renew over HTTPS, the feed, scale", run: runBenchAll},
			"issue":       {summary: "certificates per second, p50/p99 latency, peak RSS", run: runBenchIssue},
			"renew":       {summary: "renewals over mTLS: server CPU per certificate, certificates per second, p50/p99, peak RSS", run: runBenchRenew},
			"acme":        {summary: "complete ACME orders per second, challenge validation included", run: runBenchACME},
			"revocation":  {summary: "push feed: commit → every subscriber, p50/p99/max", run: runBenchRevocation},
			"revoke-live": {summary: "revocation of live connections: commit → kept-alive mTLS connections closed, p50/p99", run: runBenchLiveRevocation},
			"ocsp":        {summary: "OCSP requests per second and p99 on loopback", run: runBenchOCSP},
			"handshake":   {summary: "full and resumed mutual-TLS handshakes/s: crypto/tls vs the mtls package", run: runBenchHandshake},
			"scale":       {summary: "a million live certificates: expiry report, list pages, CRL, OCSP, feed snapshot, start-up, audit verify, metrics", run: runBenchScale},
		}},
		"version": {summary: "print the version (also mica --version)", run: func(_ context.Context, env *cliEnv, _ []string) error {
			printVersion(env)
			return nil
		}},
	}
}

// cliEnv is what a command may touch, so tests can run commands in-process.
type cliEnv struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// tuneRuntime trades memory for CPU in the long-running commands: issuance
// allocates short-lived parse trees (x509, zlint, JSON) and the default
// GOGC=100 spends about a tenth of the CPU collecting them; 400 costs tens of
// MiB. A soft limit of defaultMemoryLimit on the runtime's memory keeps the
// peaks of start-up (the CRL, the feed's state, the audit log read at once)
// from staying resident at five times what they leave live: a server just
// started on a million certificates peaked at 650 MiB resident without it,
// 270 MiB with it. An operator's own GOGC and GOMEMLIMIT win.
//
// It also runs Go code on two threads at least. On one (a container given
// one CPU) the store's writer, which spends much of its time in write and
// fsync calls, kept the rest of the server waiting: a server pinned to one core renewed 983 certificates a second
// with a p99 of 2.3 s that way, 1,827 with a p99 of 72 ms on two threads
// (mica bench renew --spawn --server-cpus 0, the client on the other core).
func tuneRuntime(env *cliEnv) {
	if env.getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if env.getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if env.getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
}

// defaultMemoryLimit is the runtime's soft memory limit unless GOMEMLIMIT
// sets one. A server whose live heap nears it (tens of millions of
// certificates, or an OCSP response cache given more than its default
// 32 MiB, ocsp.cache_size) should raise it: the collector then runs more
// often, up to half the CPU.
const defaultMemoryLimit = 192 << 20

// errUsage marks an error caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status: 0 ok, 1 the
// command failed, 2 the command line was wrong.
func run(ctx context.Context, env *cliEnv, args []string) int {
	cmds, path := commands(), "mica"
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		printVersion(env)
		return 0
	}
	for {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			usage(env.stderr, path, cmds)
			if len(args) == 0 {
				return 2
			}
			return 0
		}
		c, ok := cmds[args[0]]
		if !ok {
			fmt.Fprintf(env.stderr, "mica: unknown command %q: run `%s --help` for the list\n", strings.Join(append(strings.Fields(path)[1:], args[0]), " "), path)
			return 2
		}
		path += " " + args[0]
		args = args[1:]
		if c.sub != nil {
			cmds = c.sub
			continue
		}
		err := c.run(ctx, env, args)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintln(env.stderr, oneLine(err))
			return 2
		default:
			fmt.Fprintln(env.stderr, oneLine(err))
			return 1
		}
	}
}

// oneLine renders an error as the single line the CLI prints.
func oneLine(err error) string {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	msg = strings.TrimSuffix(msg, ": "+errUsage.Error())
	if !strings.HasPrefix(msg, "mica: ") {
		msg = "mica: " + msg
	}
	return msg
}

func usage(w io.Writer, path string, cmds map[string]command) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", path)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-22s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nrun `%s <command> --help` for its flags\n", path)
}

// newFlags makes a flag set that reports errors instead of exiting. The flag
// package's own printing is silenced: an error becomes the CLI's one line,
// and --help prints the flags.
func newFlags(_ *cliEnv, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses flags and turns a flag error into a usage error. Flags may
// come before or after positional arguments (`mica cert revoke SERIAL
// --reason superseded`), as people type them; after "--" everything is
// positional.
func parse(env *cliEnv, fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		rest := args
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				synopsis := "mica " + fs.Name() + " [flags]"
				if a := argsOf(fs.Name()); a != "" {
					synopsis += " " + a
				}
				fmt.Fprintf(env.stderr, "usage: %s\n\nflags:\n", synopsis)
				printFlags(env.stderr, fs)
				return err
			}
			return fmt.Errorf("%s: %v (run `mica %s --help` for its flags): %w", fs.Name(), err, fs.Name(), errUsage)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if len(rest) > len(args) && rest[len(rest)-len(args)-1] == "--" {
			positional = append(positional, args...)
			break
		}
		positional, args = append(positional, args[0]), args[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

// argsOf is the args of the command at path ("cert revoke").
func argsOf(path string) string {
	cmds := commands()
	var c command
	for _, name := range strings.Fields(path) {
		var ok bool
		if c, ok = cmds[name]; !ok {
			return ""
		}
		cmds = c.sub
	}
	return c.args
}

// printFlags lists fs's flags like flag.PrintDefaults, but names each
// flag's argument by its type only: PrintDefaults takes a `quoted` word in
// the usage text for the argument's name, and mica's usage texts quote
// commands.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, _ := flag.UnquoteUsage(&flag.Flag{Value: f.Value})
		if _, ok := f.Value.(interface{ D() time.Duration }); ok {
			kind = "duration" // duration.Duration: days allowed, e.g. 7d
		}
		line := "  -" + f.Name
		if kind != "" {
			line += " " + kind
		}
		line += "\n    \t" + strings.ReplaceAll(f.Usage, "\n", "\n    \t")
		switch f.DefValue {
		case "", "false", "0", "0s", "[]":
		default:
			if kind == "string" {
				line += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				line += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		fmt.Fprintln(w, line)
	})
}

func usageError(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errUsage)...)
}
