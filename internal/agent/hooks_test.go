package agent

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// exitCommand is a command that exits with code: this test binary, run
// again as TestExitHelperProcess, so the test needs no program of the
// system.
func exitCommand(code int) []string {
	return []string{os.Args[0], "-test.run=^TestExitHelperProcess$", "--", "exit", strconv.Itoa(code)}
}

// TestExitHelperProcess is not a test: run by exitCommand, it says so on
// its output and exits with the code asked for; in a normal run it does
// nothing.
func TestExitHelperProcess(t *testing.T) {
	args := flag.Args()
	if len(args) != 2 || args[0] != "exit" {
		return
	}
	code, _ := strconv.Atoi(args[1])
	fmt.Printf("helper exits %d\n", code)
	os.Exit(code)
}

func TestHooks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		hook    Hook
		wantErr bool
	}{
		{"command succeeds", CommandHook(exitCommand(0)), false},
		{"command fails", CommandHook(exitCommand(3)), true},
		{"command missing", CommandHook([]string{filepath.Join(dir, "no-such-program")}), true},
		{"no command", CommandHook(nil), false},
		{"pid file missing", SignalHook(filepath.Join(dir, "none.pid"), syscall.SIGHUP), true},
		{"pid file garbage", SignalHook(write("bad.pid", "nginx\n"), syscall.SIGHUP), true},
		{"pid 1 refused", SignalHook(write("init.pid", "1"), syscall.SIGHUP), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.hook(t.Context()); (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
	t.Run("signal reaches the process", func(t *testing.T) {
		got := make(chan os.Signal, 1)
		signal.Notify(got, syscall.SIGUSR2)
		defer signal.Stop(got)
		if err := SignalHook(write("self.pid", strconv.Itoa(os.Getpid())), syscall.SIGUSR2)(t.Context()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no SIGUSR2 arrived")
		}
	})
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		err  bool
	}{
		{"", syscall.SIGHUP, false},
		{"hup", syscall.SIGHUP, false},
		{"SIGUSR1", syscall.SIGUSR1, false},
		{"KILL", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSignal(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("ParseSignal(%q) = %v, %v", tt.in, got, err)
			}
		})
	}
}
