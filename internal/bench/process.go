package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mica-pki/mica/internal/procmem"
)

// A benchmark's server in another process — one the operator runs, or one
// Spawn starts — is measured from outside: its CPU time and peak memory
// are read from /proc, so the client's work is not counted as the
// server's. That is the headline figure; the in-process one has no TLS,
// HTTP, JSON or request log.

// SpawnOptions say how to start a server for a benchmark.
type SpawnOptions struct {
	// Binary is the mica binary that initialises and serves: this one, or
	// another build to measure in the same run.
	Binary string
	// CPUs, when set, pins the server to these CPUs (a taskset list).
	CPUs string
	// DB is a postgres:// URL; empty is SQLite in the data directory.
	DB string
	// Setup, when set, runs on the data directory after `mica init` and
	// before `mica serve` (the binary adjusts the config there).
	Setup func(dataDir string) error
}

// Spawned is a `mica serve` a benchmark started: a fresh data directory in
// a temporary directory, served on a loopback port.
type Spawned struct {
	URL, DataDir string
	Passphrase   []byte
	PID          int
	// Describe says what runs, for the results.
	Describe string
	cmd      *exec.Cmd
	tmp      string
	log      *os.File
}

// Spawn initialises a data directory with opts.Binary and serves it.
func Spawn(ctx context.Context, opts SpawnOptions) (_ *Spawned, err error) {
	tmp, err := os.MkdirTemp("", "mica-bench-server-")
	if err != nil {
		return nil, err
	}
	s := &Spawned{tmp: tmp, DataDir: filepath.Join(tmp, "data"), Describe: opts.Binary + " serve"}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	var b [16]byte
	rand.Read(b[:])
	s.Passphrase = []byte(hex.EncodeToString(b[:]))
	passFile := filepath.Join(tmp, "passphrase")
	if err := os.WriteFile(passFile, s.Passphrase, 0o600); err != nil {
		return nil, err
	}
	args := []string{"init", "--data-dir", s.DataDir, "--passphrase-file", passFile}
	if opts.DB != "" {
		args = append(args, "--db", opts.DB)
	}
	if out, err := exec.CommandContext(ctx, opts.Binary, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: %s init: %w\n%s", opts.Binary, err, out)
	}
	if opts.Setup != nil {
		if err := opts.Setup(s.DataDir); err != nil {
			return nil, err
		}
	}
	serve := []string{opts.Binary, "serve", "--data-dir", s.DataDir, "--passphrase-file", passFile,
		"--listen", "127.0.0.1:0", "--http-listen", "off", "--metrics-listen", "off"}
	if opts.DB != "" {
		serve = append(serve, "--db", opts.DB)
	}
	if opts.CPUs != "" {
		taskset, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("bench: pinning the server to CPUs needs taskset (util-linux): %w", err)
		}
		// taskset execs the server in its place: the PID stays the server's.
		serve = append([]string{taskset, "--cpu-list", opts.CPUs}, serve...)
		s.Describe += ", CPUs " + opts.CPUs
	}
	// The log is written as in production, to a file nobody reads unless
	// the server fails to start.
	if s.log, err = os.Create(filepath.Join(tmp, "serve.log")); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(serve[0], serve[1:]...)
	s.cmd.Stderr = s.log
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s serve: %w", opts.Binary, err)
	}
	s.PID = s.cmd.Process.Pid
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), " serving on "); ok {
				urls <- strings.TrimSpace(url)
			}
		}
		close(urls)
	}()
	select {
	case url, ok := <-urls:
		if !ok {
			return nil, fmt.Errorf("bench: the spawned server exited before serving:\n%s", s.logTail())
		}
		s.URL = url
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("bench: the spawned server did not serve within a minute:\n%s", s.logTail())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s, nil
}

func (s *Spawned) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.tmp, "serve.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Stop ends the server (SIGTERM, SIGKILL after 30 s) and removes its
// directory.
func (s *Spawned) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.tmp)
}

// ProcessCPU is the CPU time, user and system, of every thread of process
// pid so far, from /proc/<pid>/stat (in ticks of 10 ms: USER_HZ is 100 on
// Linux whatever the kernel's HZ).
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: reading the server's CPU time (is it on this machine?): %w", err)
	}
	// The command name is in parentheses and may hold spaces; utime and
	// stime are the 12th and 13th fields after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bench: unexpected format of /proc/<pid>/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("bench: unexpected format of /proc/<pid>/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: unexpected format of /proc/<pid>/stat")
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// SelfCPU is this process's CPU time so far, user and system.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessPeakRSS is process pid's peak resident memory (VmHWM), 0 when
// unknown.
func ProcessPeakRSS(pid int) int64 {
	_, peak := procmem.OfProcess(pid)
	return peak
}

// LoadAverage is the machine's 1, 5 and 15 minute load averages, as uptime
// shows them: a figure measured on a shared machine means little without
// it.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
