package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Hook runs after new files are in place, to make a service load them.
// Hooks are plain functions, the way tls.Config.VerifyConnection is: wire
// whatever a service needs.
type Hook func(ctx context.Context) error

// hookTimeout bounds a reload command, so a hung command cannot stop
// renewals.
const hookTimeout = 30 * time.Second

// CommandHook runs argv (no shell) and fails when it exits non-zero.
func CommandHook(argv []string) Hook {
	return func(ctx context.Context) error {
		if len(argv) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, hookTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("agent: reload command %q failed: %w: %s", argv[0], err, strings.TrimSpace(lastLine(out)))
		}
		return nil
	}
}

// SignalHook sends sig to the process whose id is in pidFile, the classic
// "reload on SIGHUP" for nginx, HAProxy and friends.
func SignalHook(pidFile string, sig syscall.Signal) Hook {
	return func(context.Context) error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return fmt.Errorf("agent: reading pid file: %w (is the service running?)", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			return fmt.Errorf("agent: pid file %s does not hold a process id", pidFile)
		}
		if err := syscall.Kill(pid, sig); err != nil {
			return fmt.Errorf("agent: sending %v to process %d from %s: %w", sig, pid, pidFile, err)
		}
		return nil
	}
}

// ParseSignal reads a signal name such as "HUP" or "SIGUSR1".
func ParseSignal(name string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(name), "SIG") {
	case "HUP", "":
		return syscall.SIGHUP, nil
	case "USR1":
		return syscall.SIGUSR1, nil
	case "USR2":
		return syscall.SIGUSR2, nil
	case "TERM":
		return syscall.SIGTERM, nil
	case "INT":
		return syscall.SIGINT, nil
	}
	return 0, fmt.Errorf("agent: unknown signal %q: use HUP, USR1, USR2, TERM or INT", name)
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
