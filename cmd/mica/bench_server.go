package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A benchmark's server in another process: either one the operator runs
// (--server, with --server-pid for its CPU time) or one the benchmark
// spawns (--spawn), a fresh `mica init` data directory served by `mica
// serve` from this binary or another (--server-binary, to measure an
// older build in the same run), optionally pinned to CPUs with taskset.

// benchLimits lets the benchmark's identities renew more often than an
// agent would: the default per-identity limit allows ten in a burst. The
// guard still runs (buckets, storm and burst detectors), as in production.
const benchLimits = `
# mica bench: each benchmark identity renews many times a second.
limits:
  profiles:
    service:
      per_identity: {rate: off}
`

// appendBenchLimits adds benchLimits to the config of data directory d.
func appendBenchLimits(d dataPaths) error {
	f, err := os.OpenFile(d.config(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, benchLimits)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// spawnedServer is a `mica serve` the benchmark started.
type spawnedServer struct {
	url, dataDir string
	pass         []byte
	pid          int
	cmd          *exec.Cmd
	stderr       *os.File
	tmp          string
}

// spawnServer initialises a data directory in a temporary directory with
// binary and serves it on a loopback port, pinned to cpus when set.
func spawnServer(ctx context.Context, binary, cpus, db string) (_ *spawnedServer, err error) {
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: finding this binary to spawn the server: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "mica-bench-server-")
	if err != nil {
		return nil, err
	}
	s := &spawnedServer{tmp: tmp, dataDir: filepath.Join(tmp, "data")}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	var b [16]byte
	rand.Read(b[:])
	s.pass = []byte(hex.EncodeToString(b[:]))
	passFile := filepath.Join(tmp, "passphrase")
	if err := os.WriteFile(passFile, s.pass, 0o600); err != nil {
		return nil, err
	}
	args := []string{"init", "--data-dir", s.dataDir, "--passphrase-file", passFile}
	if db != "" {
		args = append(args, "--db", db)
	}
	if out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: %s init: %w\n%s", binary, err, out)
	}
	if err := appendBenchLimits(dataPaths{s.dataDir}); err != nil {
		return nil, err
	}

	serve := []string{binary, "serve", "--data-dir", s.dataDir, "--passphrase-file", passFile,
		"--listen", "127.0.0.1:0", "--http-listen", "off", "--metrics-listen", "off"}
	if db != "" {
		serve = append(serve, "--db", db)
	}
	if cpus != "" {
		taskset, err := exec.LookPath("taskset")
		if err != nil {
			return nil, fmt.Errorf("bench: --server-cpus needs taskset (util-linux): %w", err)
		}
		serve = append([]string{taskset, "--cpu-list", cpus}, serve...)
	}
	// The server's log goes to a file: written as in production, read by
	// nobody, and shown if the server fails to start.
	if s.stderr, err = os.Create(filepath.Join(tmp, "serve.log")); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(serve[0], serve[1:]...)
	s.cmd.Stderr = s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s serve: %w", binary, err)
	}
	// taskset execs the server in place, so the PID is the server's.
	s.pid = s.cmd.Process.Pid
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
			return nil, fmt.Errorf("bench: the spawned server exited before serving: %s", s.log())
		}
		s.url = url
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("bench: the spawned server did not start serving within a minute: %s", s.log())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s, nil
}

// log is the end of the spawned server's log, for errors.
func (s *spawnedServer) log() string {
	b, _ := os.ReadFile(filepath.Join(s.tmp, "serve.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop ends the server (SIGTERM, then SIGKILL after 30 s) and removes its
// directory.
func (s *spawnedServer) stop() {
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
	if s.stderr != nil {
		s.stderr.Close()
	}
	os.RemoveAll(s.tmp)
}

// processCPU is the CPU time (user and system, every thread) process pid
// has used, from /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100
// on Linux whatever the kernel's HZ).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: reading the server's CPU time (is it on this machine?): %w", err)
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bench: unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	// After the name: state(1) … utime is field 14 of the line, stime 15.
	if len(f) < 13 {
		return 0, errors.New("bench: unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: unexpected /proc stat format")
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// selfCPU is this process's CPU time, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processPeakRSS is process pid's peak resident memory (VmHWM), 0 when
// unknown.
func processPeakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
