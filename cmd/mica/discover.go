package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/discover/filescan"
	"github.com/mica-pki/mica/internal/discover/tlsscan"
)

func discoverCommands() map[string]command {
	return map[string]command{
		"tls":   {summary: "scan TLS endpoints (hosts, networks, ports; STARTTLS for SMTP, IMAP, PostgreSQL) and report the certificates they present", run: runDiscoverTLS},
		"files": {summary: "scan files (PEM, DER, PKCS#12, Java keystores) for certificates and the keys beside them, and report them", run: runDiscoverFiles},
	}
}

// A report part carries at most this many sightings or covered
// locations, and waits at most reportEvery, so a long scan shows up in
// the inventory as it goes and a resumed one repeats little.
const (
	partSightings = 200
	partScanned   = 5000
	reportEvery   = 5 * time.Second
)

func runDiscoverTLS(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "discover tls")
	hostsFile := fs.String("hosts", "", "file of hosts, networks (CIDR) or host:port, one a line (# comments), besides the arguments")
	ports := fs.String("ports", "443", "ports to scan on every host without its own, e.g. 443,8443,9000-9010")
	sni := fs.String("sni", "", "server names to also ask every address for, comma-separated (one certificate per name)")
	startTLS := fs.String("starttls", "", "port=protocol pairs besides 25/587=smtp, 143=imap, 5432=postgres, e.g. 2525=smtp")
	concurrency := fs.Int("concurrency", 64, "endpoints probed at once")
	rate := fs.Float64("rate", 0, "at most this many new connections a second (0: no limit)")
	timeout := fs.Duration("timeout", 5*time.Second, "per endpoint, from connecting to the end of the handshake")
	statePath := fs.String("state", "", "resume file: endpoints already reported are skipped when the scan is run again; removed when it finishes")
	progressMode := fs.String("progress", "auto", "progress on stderr: auto (when it is a terminal), on or off")
	output := fs.String("output", "text", "summary as text or json")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	spec := tlsscan.Spec{Hosts: fs.Args()}
	if *hostsFile != "" {
		lines, err := readLines(*hostsFile)
		if err != nil {
			return err
		}
		spec.Hosts = append(spec.Hosts, lines...)
	}
	if len(spec.Hosts) == 0 {
		return usageError("discover tls needs hosts, networks or host:port to scan, as arguments or with --hosts FILE")
	}
	if spec.Ports, err = tlsscan.ParsePorts(*ports); err != nil {
		return usageError("--ports: %v", err)
	}
	if spec.StartTLS, err = tlsscan.ParseStartTLS(*startTLS); err != nil {
		return usageError("--starttls: %v", err)
	}
	if *sni != "" {
		spec.ServerNames = strings.Split(*sni, ",")
	}
	total, err := spec.Count()
	if err != nil {
		return usageError("%v", err)
	}
	if *output != "text" && *output != "json" {
		return usageError("--output must be text or json, not %q", *output)
	}
	st, err := openScanState(*statePath)
	if err != nil {
		return err
	}
	rep := newReporter(c, st.scanID)
	prog := newProgress(env, *progressMode, total-len(st.done), "endpoints")
	if len(st.done) > 0 {
		fmt.Fprintf(env.stderr, "mica: resuming scan %s: %d endpoints were reported before\n", st.scanID, len(st.done))
	}

	started := time.Now()
	scanned, unknown, err := runTLSScan(ctx, rep, spec, tlsscan.Config{Concurrency: *concurrency, Rate: *rate, Timeout: *timeout}, st, prog)
	if err != nil {
		if st.path != "" {
			return fmt.Errorf("discover: the scan stopped (%v); run the same command with --state %s to go on", err, st.path)
		}
		return fmt.Errorf("discover: %w (pass --state FILE to be able to resume a long scan)", err)
	}
	if err := st.finish(); err != nil {
		return err
	}
	return printDiscovery(env.stdout, *output, fmt.Sprintf("scanned %d endpoints in %s (%d timed out or failed)", scanned,
		time.Since(started).Round(time.Millisecond), unknown), rep.sum)
}

// runTLSScan probes every target of spec and reports what it finds in
// parts; each part's endpoints are noted in st once the server took it.
// It returns how many endpoints it probed and how many of them said
// nothing for sure (timeouts, failures).
func runTLSScan(ctx context.Context, rep *reporter, spec tlsscan.Spec, cfg tlsscan.Config, st *scanState, prog *progress) (scanned, unknown int, err error) {
	var (
		part     client.DiscoveryReport
		partKeys []string
		lastSent = time.Now()
	)
	flush := func(ctx context.Context) error {
		if len(partKeys) == 0 {
			return nil
		}
		if err := rep.send(ctx, part); err != nil {
			return err
		}
		if err := st.add(partKeys); err != nil {
			return err
		}
		part, partKeys, lastSent = client.DiscoveryReport{}, nil, time.Now()
		return nil
	}
	cfg.Skip = func(t tlsscan.Target) bool { return st.done[t.Location().String()] }
	scanErr := tlsscan.Scan(ctx, cfg, spec.Targets(), func(r tlsscan.Result) error {
		key := r.Target.Location().String()
		scanned++
		switch {
		case r.Outcome == tlsscan.OutcomeTLS:
			sg := client.DiscoverySighting{Location: key, Address: r.Addr.String(), TLSVersion: r.TLSVersion}
			for _, c := range r.Chain {
				sg.Chain = append(sg.Chain, c.Raw)
			}
			part.Sightings = append(part.Sightings, sg)
			part.Scanned = append(part.Scanned, key)
			prog.found++
		case r.Outcome.Definite():
			part.Scanned = append(part.Scanned, key)
		default:
			unknown++
		}
		partKeys = append(partKeys, key)
		prog.step()
		if len(part.Sightings) >= partSightings || len(part.Scanned) >= partScanned || time.Since(lastSent) >= reportEvery {
			return flush(ctx)
		}
		return nil
	})
	prog.finish()
	// What was scanned is reported even when the scan was interrupted, so
	// that a resumed scan does not repeat it.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return scanned, unknown, errors.Join(scanErr, flush(flushCtx))
}

func runDiscoverFiles(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "discover files")
	passFile := fs.String("passphrases", "", "file of passphrases to open PKCS#12 files, Java keystores and encrypted keys with, one a line")
	exclude := fs.String("exclude", strings.Join(filescan.DefaultExclude, ","), "directories not to enter, comma-separated")
	includeCA := fs.Bool("include-ca", false, "also report CA certificates that stand alone (trust stores)")
	maxSize := fs.Int64("max-size", 1<<20, "skip files larger than this many bytes")
	host := fs.String("host", "", "this host's name, as the inventory records it (default: the system's host name)")
	output := fs.String("output", "text", "summary as text or json")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	roots := fs.Args()
	if len(roots) == 0 {
		return usageError("discover files needs directories or files to scan, e.g. /etc /srv")
	}
	if *output != "text" && *output != "json" {
		return usageError("--output must be text or json, not %q", *output)
	}
	cfg := filescan.Config{MaxFileSize: *maxSize, IncludeCA: *includeCA, Exclude: splitList(*exclude),
		Problem: func(p filescan.Problem) { fmt.Fprintf(env.stderr, "mica: %s: %v\n", p.Path, p.Err) }}
	if *passFile != "" {
		var err error
		if cfg.Passphrases, err = filescan.ReadPassphrases(*passFile); err != nil {
			return err
		}
	}
	hostName, hostNames, err := thisHost(*host)
	if err != nil {
		return err
	}
	rep := newReporter(c, newScanID())
	rep.host, rep.hostNames = hostName, hostNames
	started := time.Now()
	stats, err := runFileScan(ctx, rep, roots, cfg)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	return printDiscovery(env.stdout, *output, fmt.Sprintf("read %d of %d files in %s (%d problems)", stats.Read, stats.Files,
		time.Since(started).Round(time.Millisecond), stats.Problems), rep.sum)
}

// runFileScan scans roots and reports what it finds in parts, the last
// saying the trees are finished (so that what was seen under them before
// and not now is gone).
func runFileScan(ctx context.Context, rep *reporter, roots []string, cfg filescan.Config) (filescan.Stats, error) {
	var part client.DiscoveryReport
	stats, err := filescan.Scan(ctx, roots, cfg, func(f filescan.Found) error {
		sg := client.DiscoverySighting{Location: f.Location(rep.host).String(), Format: string(f.Format)}
		for _, c := range f.Chain {
			sg.Chain = append(sg.Chain, c.Raw)
		}
		if f.Key != nil {
			sg.KeyPath, sg.KeyWorldReadable = f.Key.Path, f.Key.WorldReadable
		}
		part.Sightings = append(part.Sightings, sg)
		if len(part.Sightings) >= client.MaxReportSightings/2 {
			err := rep.send(ctx, part)
			part = client.DiscoveryReport{}
			return err
		}
		return nil
	})
	if err != nil {
		return stats, err
	}
	for _, r := range roots {
		abs, _ := filepath.Abs(r)
		part.Complete = append(part.Complete, filescan.Found{Path: abs}.Location(rep.host).String())
	}
	return stats, rep.send(ctx, part)
}

// reporter sends a scan to the server in parts and adds up what the
// server recorded.
type reporter struct {
	c         *client.Client
	scanID    string
	host      string
	hostNames []string
	sum       client.DiscoverySummary
}

// errNotReported marks a failure to hand a part to the server.
var errNotReported = errors.New("the server did not take the report")

func newReporter(c *client.Client, scanID string) *reporter {
	return &reporter{c: c, scanID: scanID, sum: client.DiscoverySummary{Findings: map[string]int{}}}
}

func (r *reporter) send(ctx context.Context, part client.DiscoveryReport) error {
	part.ScanID, part.Host, part.HostNames = r.scanID, r.host, r.hostNames
	if part.Sightings == nil {
		part.Sightings = []client.DiscoverySighting{}
	}
	s, err := r.c.ReportDiscovery(ctx, part)
	if err != nil {
		return fmt.Errorf("%w: %w", errNotReported, err)
	}
	r.sum.Sightings += s.Sightings
	r.sum.Certificates += s.Certificates
	r.sum.New += s.New
	r.sum.Gone += s.Gone
	r.sum.SightingsGone += s.SightingsGone
	for f, n := range s.Findings {
		r.sum.Findings[f] += n
	}
	return nil
}

func printDiscovery(w io.Writer, format, what string, sum client.DiscoverySummary) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Scan string `json:"scan"`
			client.DiscoverySummary
		}{what, sum})
	}
	fmt.Fprintf(w, "%s: %d certificates seen (%d new to the inventory), %d sightings ended, %d certificates no longer seen anywhere\n",
		what, sum.Sightings, sum.New, sum.SightingsGone, sum.Gone)
	if len(sum.Findings) > 0 {
		names := make([]string, 0, len(sum.Findings))
		for f := range sum.Findings {
			names = append(names, f)
		}
		sort.Strings(names)
		var parts []string
		for _, f := range names {
			parts = append(parts, fmt.Sprintf("%s %d", f, sum.Findings[f]))
		}
		fmt.Fprintf(w, "findings: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// scanState is a resumable scan: its id and the endpoints reported.
type scanState struct {
	path   string
	scanID string
	done   map[string]bool
	f      *os.File
}

const stateHeader = "mica discover state v1 "

func openScanState(path string) (*scanState, error) {
	st := &scanState{path: path, done: map[string]bool{}}
	if path == "" {
		st.scanID = newScanID()
		return st, nil
	}
	if data, err := os.ReadFile(path); err == nil {
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		id, ok := strings.CutPrefix(lines[0], stateHeader)
		if !ok {
			return nil, fmt.Errorf("discover: %s is not a scan state file: remove it or name another with --state", path)
		}
		st.scanID = id
		for _, l := range lines[1:] {
			st.done[l] = true
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("discover: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("discover: state file: %w", err)
	}
	st.f = f
	if st.scanID == "" {
		st.scanID = newScanID()
		if _, err := fmt.Fprintln(f, stateHeader+st.scanID); err != nil {
			return nil, fmt.Errorf("discover: state file: %w", err)
		}
	}
	return st, nil
}

// add notes endpoints as reported, durably, before the scan goes on.
func (st *scanState) add(keys []string) error {
	if st.f == nil {
		return nil
	}
	if _, err := io.WriteString(st.f, strings.Join(keys, "\n")+"\n"); err != nil {
		return fmt.Errorf("discover: state file: %w", err)
	}
	return st.f.Sync()
}

// finish removes the state of a scan that ended.
func (st *scanState) finish() error {
	if st.f == nil {
		return nil
	}
	st.f.Close()
	return os.Remove(st.path)
}

func newScanID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// progress prints how far a scan is on stderr: a line rewritten in place
// on a terminal, a line every few seconds otherwise (when asked for).
type progress struct {
	w          io.Writer
	on, tty    bool
	what       string
	total      int
	done       int
	found      int
	start      time.Time
	lastPrint  time.Time
	printEvery time.Duration
}

func newProgress(env *cliEnv, mode string, total int, what string) *progress {
	p := &progress{w: env.stderr, total: total, what: what, start: time.Now()}
	if f, ok := env.stderr.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.on = mode == "on" || mode == "auto" && p.tty
	p.printEvery = 5 * time.Second
	if p.tty {
		p.printEvery = 200 * time.Millisecond
	}
	return p
}

func (p *progress) step() {
	p.done++
	if p.on && time.Since(p.lastPrint) >= p.printEvery {
		p.print()
	}
}

func (p *progress) print() {
	p.lastPrint = time.Now()
	elapsed := time.Since(p.start)
	rate := float64(p.done) / max(elapsed.Seconds(), 1e-3)
	eta := "-"
	if rate > 0 && p.done < p.total {
		eta = (time.Duration(float64(p.total-p.done)/rate) * time.Second).Round(time.Second).String()
	}
	line := fmt.Sprintf("%d/%d %s (%.1f%%), %d certificates, %.0f/s, %s left", p.done, p.total, p.what,
		100*float64(p.done)/float64(max(p.total, 1)), p.found, rate, eta)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, "mica: "+line)
	}
}

func (p *progress) finish() {
	if !p.on {
		return
	}
	p.print()
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// thisHost is the host name a file scan records, and the host's other
// names and addresses (a mica certificate naming one of them is in its
// place).
func thisHost(name string) (string, []string, error) {
	if name == "" {
		var err error
		if name, err = os.Hostname(); err != nil {
			return "", nil, fmt.Errorf("discover: the host's name: %w (pass --host)", err)
		}
	}
	var names []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLinkLocalUnicast() {
			names = append(names, p.Addr().Unmap().String())
		}
	}
	slices.Sort(names)
	n, err := identity.DNSName(name)
	if err != nil {
		return "", nil, fmt.Errorf("discover: this host's name %q is no DNS name (%v): pass --host", name, err)
	}
	return n.String(), slices.Compact(names), nil
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
