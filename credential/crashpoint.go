//go:build micatest

package credential

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
)

// CrashEnv names the variable that, in binaries built with the micatest
// tag (the integration tests build mica so), makes the process kill itself
// with SIGKILL right after the Nth durable step of a credential write,
// counted from the start of the process. Production builds do not contain
// this file.
const CrashEnv = "MICA_TEST_CRASH_AT_STEP"

func init() {
	n, err := strconv.Atoi(os.Getenv(CrashEnv))
	if err != nil || n <= 0 {
		return
	}
	var count atomic.Int64
	afterStep = func(step string) {
		if count.Add(1) != int64(n) {
			return
		}
		fmt.Fprintf(os.Stderr, "credential: crash point %d reached after %q: killing this process\n", n, step)
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			p.Kill()
		}
		select {} // SIGKILL is on its way
	}
}
