package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Targets of the speed the project holds itself to, for the load
// benchmarks: server CPU per certificate over HTTPS at 64 in flight, with
// the client in another process, and the p99 latency there.
const (
	TargetRenewCPUMs  = 0.30
	TargetEnrollCPUMs = 0.45
	TargetP99Ms       = 50.0
)

// Summary is what `mica bench all` reports: each benchmark's figures in
// one table. A benchmark that failed leaves its error instead.
type Summary struct {
	Figures []Figure `json:"figures"`
	Errors  []string `json:"errors,omitempty"`
	Note    string   `json:"note"`
}

// AddIssue adds the figures of an enrollment benchmark.
func (s *Summary) AddIssue(r *IssueResult, command string) {
	s.addLoad("enroll", command, r.ServerCPUMs, TargetEnrollCPUMs, r.PerSecond, r.P50Ms, r.P99Ms, r.PeakRSSBytes, r.LoadBefore, r.Errors)
}

// AddRenew adds the figures of a renewal benchmark.
func (s *Summary) AddRenew(r *RenewResult, command string) {
	s.addLoad("renew", command, r.ServerCPUMs, TargetRenewCPUMs, r.PerSecond, r.P50Ms, r.P99Ms, r.PeakRSSBytes, r.LoadBefore, r.Errors)
}

func (s *Summary) addLoad(what, command string, cpuMs, cpuTarget, perSec, p50, p99 float64, rss int64, load string, errs int) {
	load1 := firstLoad(load)
	s.Figures = append(s.Figures,
		Figure{Name: what + ": server CPU per certificate", Command: command, Value: fmt.Sprintf("%.3f ms", cpuMs),
			Target: fmt.Sprintf("≤ %.2f ms", cpuTarget), OK: cpuMs > 0 && cpuMs <= cpuTarget, Load1: load1},
		Figure{Name: what + ": throughput, p50", Command: command, Value: fmt.Sprintf("%.0f/s, p50 %.1f ms", perSec, p50),
			Target: "—", OK: errs == 0, Load1: load1, Note: fmt.Sprintf("%d errors", errs)},
		Figure{Name: what + ": p99 latency", Command: command, Value: fmt.Sprintf("%.1f ms", p99),
			Target: fmt.Sprintf("≤ %.0f ms", TargetP99Ms), OK: p99 <= TargetP99Ms, Load1: load1},
		Figure{Name: what + ": server peak RSS", Command: command, Value: fmt.Sprintf("%.0f MiB", float64(rss)/(1<<20)),
			Target: "—", OK: true, Load1: load1},
	)
}

// AddRevocation adds the figures of the push feed benchmark.
func (s *Summary) AddRevocation(r *RevocationResult, command string) {
	load1 := firstLoad(LoadAverage())
	s.Figures = append(s.Figures, Figure{Name: fmt.Sprintf("feed: commit → %d subscribers, p99", r.Subscribers), Command: command,
		Value: fmt.Sprintf("%.1f ms (max %.1f)", r.P99Ms, r.MaxMs), Target: "≤ 1000 ms", OK: r.Missing == 0 && r.MaxMs <= 1000,
		Load1: load1, Note: fmt.Sprintf("%d deliveries missing", r.Missing)})
}

// AddScale adds the figures of the scale benchmark, named with its size.
func (s *Summary) AddScale(r *ScaleResult) {
	for _, f := range r.Figures {
		f.Name = fmt.Sprintf("%s (%s, %d live)", f.Name, r.Engine, r.Live)
		s.Figures = append(s.Figures, f)
	}
}

// AddError records a benchmark that could not run.
func (s *Summary) AddError(what string, err error) {
	s.Errors = append(s.Errors, what+": "+err.Error())
}

// WriteText prints the table.
func (s *Summary) WriteText(w io.Writer) {
	fmt.Fprintf(w, "mica bench all: load average now %s\n", LoadAverage())
	writeFigures(w, s.Figures)
	for _, e := range s.Errors {
		fmt.Fprintln(w, "FAILED", e)
	}
	fmt.Fprintln(w, s.Note)
}

// writeFigures prints figures as a table, with the note of each one that
// missed its target under it.
func writeFigures(w io.Writer, figs []Figure) {
	tw := newTable(w, "figure", "value", "target", "ok", "load", "command")
	for _, f := range figs {
		ok := "yes"
		if !f.OK {
			ok = "NO"
		}
		tw.row(f.Name, f.Value, f.Target, ok, fmt.Sprintf("%.2f", f.Load1), f.Command)
		if f.Note != "" && !f.OK {
			tw.row("", "  "+f.Note, "", "", "", "")
		}
	}
	tw.flush()
}

// firstLoad is the 1-minute figure of a LoadAverage string, 0 if unknown.
func firstLoad(load string) float64 {
	first, _, _ := strings.Cut(load, ",")
	v, _ := strconv.ParseFloat(strings.TrimSpace(first), 64)
	return v
}
