package procmem

import "testing"

func TestParse(t *testing.T) {
	rss, peak := parse("Name:\tmica\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n")
	if rss != 10<<20 || peak != 20<<20 {
		t.Errorf("parse = %d, %d; want %d, %d", rss, peak, 10<<20, 20<<20)
	}
	if rss, peak := Read(); rss <= 0 || peak < rss {
		t.Errorf("Read on this process = %d, %d; want 0 < rss <= peak", rss, peak)
	}
}
