package feed

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store/sqlite"
)

// BenchmarkNewSubscribers measures what new subscribers cost the server
// with a million entries (MICA_FEED_BENCH_ENTRIES to change it): 1 and 10
// streams at once, in parts and as one event (subscribers that predate
// parts). Each reader stops reading at the first piece of its snapshot,
// so every stream is in the middle of its snapshot; then the heap still
// in use after a collection, less what it was before, is what the streams
// hold (held-MiB). Then they read on to the end, discarding (the times).
// The state is put in the Hub directly: the store is not what is
// measured.
func BenchmarkNewSubscribers(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("MICA_FEED_BENCH_ENTRIES")); err == nil {
		n = v
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "mica.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	h, err := New(Config{Source: st, Poll: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Load(ctx); err != nil {
		b.Fatal(err)
	}
	fillState(h, n, 1000)
	srv := httptest.NewTLSServer(h.Handler())
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	for _, mode := range []string{"parts", "one-event"} {
		for _, subs := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/subscribers=%d", mode, subs), func(b *testing.B) {
				query := "?snapshot=chunked"
				if mode == "one-event" {
					query = ""
				}
				for b.Loop() {
					held, first, total := measureStreams(b, srv.URL+"/v1/revocations/feed"+query, pool, subs)
					b.ReportMetric(float64(held)/(1<<20), "held-MiB")
					b.ReportMetric(float64(first.Milliseconds()), "ms-to-first-piece")
					b.ReportMetric(float64(total.Milliseconds()), "ms-to-end")
				}
			})
		}
	}
}

// measureStreams opens subs streams at once, measures what the process
// holds once each has its snapshot's first piece, then reads them to the
// end of the snapshot, discarding it.
func measureStreams(b *testing.B, url string, pool *x509.CertPool, subs int) (held uint64, first, total time.Duration) {
	runtime.GC()
	base := heapAlloc()
	var firstNs atomic.Int64
	var wg, started sync.WaitGroup
	resume := make(chan struct{})
	start := time.Now()
	started.Add(subs)
	for range subs {
		wg.Go(func() {
			once := sync.OnceFunc(started.Done)
			defer once()
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			defer hc.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReaderSize(resp.Body, 64<<10)
			var ending bool
			for {
				line, err := br.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					b.Error(err)
					return
				}
				switch string(line) {
				case "event: snapshot-part\n", "event: snapshot\n":
					if firstNs.Load() == 0 {
						firstNs.CompareAndSwap(0, int64(time.Since(start)))
					}
					once()
					<-resume
				}
				if string(line) == "event: snapshot-end\n" || string(line) == "event: snapshot\n" {
					ending = true // its data line ends the snapshot
				}
				if ending && err == nil && string(line) == "\n" {
					return
				}
			}
		})
	}
	started.Wait()
	for range 3 {
		runtime.GC()
		held = max(held, heapAlloc()-min(base, heapAlloc()))
	}
	close(resume)
	wg.Wait()
	return held, time.Duration(firstNs.Load()), time.Since(start)
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
