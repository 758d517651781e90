package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Local is a Cluster that always starts a throwaway server of its own,
// even when MICA_TEST_POSTGRES_URL is set, for a test that does things to
// the server itself (Freeze). Stop it when the test ends.
func Local() *Cluster { return &Cluster{forceLocal: true} }

// Freeze stops the server's processes (the postmaster and every backend)
// with SIGSTOP, as a hung host or a stalled disk would: connections stay
// open and nothing answers. It returns thaw, which resumes them with
// SIGCONT; thaw also runs when t ends, before anything else that t's
// earlier cleanups do, so the cluster can be stopped. Only a cluster this
// test binary started is frozen: on a server of EnvURL's the test is
// skipped, since stopping a server others may use is not a test's to do.
func (c *Cluster) Freeze(t testing.TB) (thaw func()) {
	t.Helper()
	if c.local == nil {
		t.Skipf("pgtest: freezing PostgreSQL needs a server this test binary started, not the one %s names (pgtest.Local() always starts one)", EnvURL)
	}
	pids, err := c.local.stopAll()
	if err != nil {
		c.local.signal(pids, syscall.SIGCONT)
		t.Fatalf("pgtest: freeze: %v", err)
	}
	thawed := false
	thaw = func() {
		if !thawed {
			thawed = true
			c.local.signal(pids, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	return thaw
}

// stopAll sends SIGSTOP to the postmaster first, so that it forks no new
// backend, then to each of its children, and returns them all.
func (l *local) stopAll() ([]int, error) {
	pidFile, err := os.ReadFile(filepath.Join(l.dir, "data", "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(pidFile), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return nil, fmt.Errorf("postmaster.pid starts with %q, not a process id", first)
	}
	if err := syscall.Kill(postmaster, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("stop the postmaster %d: %w", postmaster, err)
	}
	pids := []int{postmaster}
	children, err := childrenOf(postmaster)
	if err != nil {
		return pids, err
	}
	for _, pid := range children {
		// A child may have exited since it was listed.
		if err := syscall.Kill(pid, syscall.SIGSTOP); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func (l *local) signal(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses,
		// so read from the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) >= 2 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the postmaster has no children: is it a PostgreSQL server?")
	}
	return out, nil
}
