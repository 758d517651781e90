package testlayer

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that notes a skip or a failure instead of
// ending the test, so the layer's own decisions can be checked.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

// setShort sets -short for the rest of t.
func setShort(t *testing.T, short bool) {
	t.Helper()
	was := flag.Lookup("test.short").Value.String()
	if err := flag.Set("test.short", fmt.Sprint(short)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flag.Set("test.short", was) })
}

func TestIntegration(t *testing.T) {
	for _, short := range []bool{true, false} {
		t.Run(fmt.Sprintf("short=%v", short), func(t *testing.T) {
			setShort(t, short)
			r := &recorder{TB: t}
			Integration(r, "starts two servers")
			if short && !strings.Contains(r.skipped, "starts two servers") {
				t.Errorf("under -short: skip reason %q, want one naming what the test needs", r.skipped)
			}
			if !short && r.skipped != "" {
				t.Errorf("in the full suite the test was skipped: %q", r.skipped)
			}
		})
	}
}

func TestTool(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "mica-test-program")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mica-not-executable"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	tests := []struct {
		name, program string
		short         bool
		wantPath      string
		wantSkip      bool
		wantFail      bool
	}{
		{"Found", "mica-test-program", false, prog, false, false},
		{"Missing", "mica-no-such-program", false, "", false, true},
		{"NotExecutable", "mica-not-executable", false, "", false, true},
		{"ShortSkipsEvenWhenInstalled", "mica-test-program", true, "", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setShort(t, tc.short)
			r := &recorder{TB: t}
			got := Tool(r, tc.program)
			if tc.wantSkip {
				// A real skip ends the test before Tool looks; the
				// recorder lets it go on, so only the skip matters here.
				if !strings.Contains(r.skipped, tc.program) {
					t.Errorf("skip reason %q, want one naming %s", r.skipped, tc.program)
				}
				return
			}
			if got != tc.wantPath {
				t.Errorf("Tool = %q, want %q", got, tc.wantPath)
			}
			if failed := r.failed != ""; failed != tc.wantFail {
				t.Errorf("failed = %v (%q), want %v", failed, r.failed, tc.wantFail)
			}
			if tc.wantFail && !strings.Contains(r.failed, "scripts/test.sh") {
				t.Errorf("failure %q does not say how to install the program", r.failed)
			}
		})
	}
}
