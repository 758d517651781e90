// Package procmem reads a process's memory use from /proc, for the
// server's stats endpoint and the benchmarks' peak RSS figures.
package procmem

import (
	"os"
	"strconv"
	"strings"
)

// Read returns this process's resident and peak resident memory in bytes
// (VmRSS, VmHWM); zero where /proc does not say.
func Read() (rss, peak int64) {
	return readStatus("/proc/self/status")
}

// OfProcess is Read for another process, by its pid: a server a benchmark
// started.
func OfProcess(pid int) (rss, peak int64) {
	return readStatus("/proc/" + strconv.Itoa(pid) + "/status")
}

func readStatus(path string) (rss, peak int64) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	return parse(string(data))
}

func parse(status string) (rss, peak int64) {
	for _, line := range strings.Split(status, "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}
