package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/procmem"
	"github.com/mica-pki/mica/internal/store"
)

// ScaleConfig is one `mica bench scale` run: a store holding a large fleet
// (loaded by Load, or loaded before and reused), a real `mica serve`
// process on it, and the figures of issue "a million live certificates"
// measured against that process as an operator would meet them.
type ScaleConfig struct {
	// Engine names the store in the results ("sqlite", "postgres").
	Engine string
	// Store is the data directory's store, open in this process: Load
	// writes through it and the CRL rebuild is measured on it.
	Store store.Store
	// Load says what to load; its counts are the targets. A store that
	// already holds that many live certificates is measured as it is.
	Load LoadConfig
	// Server makes the `mica serve` command on the data directory, every
	// listener on 127.0.0.1:0.
	Server func(ctx context.Context) *exec.Cmd
	// CLI makes a mica command (the words after "mica") that talks to the
	// server at url with the data directory's admin credential.
	CLI func(ctx context.Context, url string, args ...string) *exec.Cmd
	// Client is an admin client of the server at url.
	Client func(url string) (*client.Client, error)
	// Roots trust the server; Admin is the admin credential (the feed).
	Roots *x509.CertPool
	Admin tls.Certificate
	// Log, when set, is told what is happening.
	Log io.Writer
}

// Figure is one measured figure with its target.
type Figure struct {
	Name    string  `json:"name"`
	Command string  `json:"command"`
	Value   string  `json:"value"`
	Target  string  `json:"target"`
	OK      bool    `json:"ok"`
	Load1   float64 `json:"load_average_1m"`
	Note    string  `json:"note,omitempty"`
}

// ScaleResult is what `mica bench scale` reports.
type ScaleResult struct {
	Engine     string      `json:"engine"`
	Live       int         `json:"live"`
	Revoked    int         `json:"revoked"`
	Loaded     *LoadResult `json:"loaded,omitempty"` // nil when the store was reused
	Figures    []Figure    `json:"figures"`
	LoadBefore float64     `json:"load_average_1m_at_start"`
	Note       string      `json:"note"`
}

// serverProc is the `mica serve` process under measurement.
type serverProc struct {
	cmd                     *exec.Cmd
	api, revocation, metric string
	started                 time.Duration // until it printed where it serves
	mu                      sync.Mutex
	out                     []string // its output, for errors
}

var (
	servingRe    = regexp.MustCompile(`serving on (https://\S+)`)
	revocationRe = regexp.MustCompile(`revocation \(CRL, OCSP\) on (http://\S+)`)
	metricsRe    = regexp.MustCompile(`metrics on (http://\S+)`)
)

// startServer starts cfg.Server and waits until it says where it serves.
func startServer(ctx context.Context, cfg *ScaleConfig) (*serverProc, error) {
	cmd := cfg.Server(ctx)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the server: %w", err)
	}
	s := &serverProc{cmd: cmd}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			if len(s.out) < 200 {
				s.out = append(s.out, line)
			}
			if m := revocationRe.FindStringSubmatch(line); m != nil {
				s.revocation = m[1]
			}
			if m := metricsRe.FindStringSubmatch(line); m != nil {
				s.metric = strings.TrimSuffix(m[1], "/metrics")
			}
			if m := servingRe.FindStringSubmatch(line); m != nil && s.api == "" {
				s.api, s.started = m[1], time.Since(start)
				close(found)
			}
			s.mu.Unlock()
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	select {
	case <-found:
		return s, nil
	case err := <-exited:
		return nil, fmt.Errorf("bench: the server exited before serving (%v): %s", err, s.output())
	case <-time.After(5 * time.Minute):
		s.stop()
		return nil, fmt.Errorf("bench: the server did not serve within 5 minutes: %s", s.output())
	}
}

func (s *serverProc) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.out, "\n")
}

func (s *serverProc) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// memory reads the server's resident and peak resident memory.
func (s *serverProc) memory() (rss, peak int64) {
	return procmem.OfProcess(s.cmd.Process.Pid)
}

// loadAverage1 is the 1-minute load average, 0 where /proc does not say.
func loadAverage1() float64 {
	first, _, _ := strings.Cut(LoadAverage(), ",")
	f, _ := strconv.ParseFloat(first, 64)
	return f
}

// runCLI runs a mica command and returns how long it took.
func runCLI(ctx context.Context, cfg *ScaleConfig, url string, args ...string) (time.Duration, string, error) {
	cmd := cfg.CLI(ctx, url, args...)
	var out strings.Builder
	cmd.Stdout = io.Discard
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return d, msg, fmt.Errorf("mica %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return d, strings.TrimSpace(out.String()), nil
}

// cliRows runs a mica command that prints CSV and counts the rows it
// printed (not the header); msg is the last line it wrote to stderr.
func cliRows(ctx context.Context, cfg *ScaleConfig, url string, args ...string) (time.Duration, int, string, error) {
	cmd := cfg.CLI(ctx, url, args...)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, "", err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, "", err
	}
	lines := 0
	lr := newLineReader(out)
	for {
		if _, _, err := lr.next(); err != nil {
			break
		}
		lines++
	}
	err = cmd.Wait()
	msg := strings.TrimSpace(errOut.String())
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	if err != nil {
		return time.Since(start), 0, msg, fmt.Errorf("mica %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return time.Since(start), max(lines-1, 0), msg, nil
}

// median of the durations, which it sorts.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

func (r *ScaleResult) add(f Figure) {
	f.Load1 = loadAverage1()
	r.Figures = append(r.Figures, f)
}

func (cfg *ScaleConfig) logf(format string, args ...any) {
	if cfg.Log != nil {
		fmt.Fprintf(cfg.Log, "bench: "+format+"\n", args...)
	}
}

// table prints aligned columns.
type table struct {
	w    io.Writer
	rows [][]string
}

func newTable(w io.Writer, header ...string) *table { return &table{w: w, rows: [][]string{header}} }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) flush() {
	widths := make([]int, len(t.rows[0]))
	for _, r := range t.rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(t.w, strings.TrimRight(b.String(), " "))
	}
}

// lineReader reads lines of any length, keeping at most a short prefix of
// each, so that a snapshot sent as one huge line can be measured without
// holding it.
type lineReader struct{ r *bufio.Reader }

func newLineReader(r io.Reader) *lineReader { return &lineReader{bufio.NewReaderSize(r, 64<<10)} }

// next returns the line's first bytes (without the newline) and its length.
func (l *lineReader) next() (string, int, error) {
	var prefix []byte
	n := 0
	for {
		chunk, err := l.r.ReadSlice('\n')
		n += len(chunk)
		if len(prefix) < 256 {
			prefix = append(prefix, chunk[:min(len(chunk), 256-len(prefix))]...)
		}
		switch {
		case err == nil:
			return strings.TrimRight(string(prefix), "\r\n"), n - 1, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return string(prefix), n, err
		}
	}
}
