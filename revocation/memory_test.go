package revocation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/revocation"
)

// BenchmarkSubscriberSnapshot measures a Subscriber's memory while it
// takes a snapshot of a million revoked certificates
// (MICA_FEED_BENCH_ENTRIES to change it), in parts and as one event (what
// it got before parts): the heap's growth at its peak (heap objects,
// sampled every millisecond: an upper bound, as it counts garbage not yet
// collected) and what it keeps once the Set holds the snapshot (after a
// collection). The server writes entries as it makes them, holding none.
func BenchmarkSubscriberSnapshot(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("MICA_FEED_BENCH_ENTRIES")); err == nil {
		n = v
	}
	for _, mode := range []string{"parts", "one-event"} {
		b.Run(mode, func(b *testing.B) {
			srv := httptest.NewTLSServer(generatedFeed(n, mode == "parts"))
			defer srv.Close()
			for b.Loop() {
				sub, err := revocation.NewSubscriber(revocation.Config{URL: srv.URL + "/v1/revocations/feed",
					TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				base := heapObjects()
				var peak atomic.Uint64
				stop, sampled := make(chan struct{}), make(chan struct{})
				go func() {
					defer close(sampled)
					t := time.NewTicker(time.Millisecond)
					defer t.Stop()
					for {
						if v := heapObjects(); v > peak.Load() {
							peak.Store(v)
						}
						select {
						case <-stop:
							return
						case <-t.C:
						}
					}
				}()
				start := time.Now()
				sub.RunOnce(context.Background())
				took := time.Since(start)
				runtime.GC()
				close(stop)
				<-sampled
				kept := heapObjects() - base
				if got := len(sub.Set().Serials()); got != n {
					b.Fatalf("the set holds %d, want %d", got, n)
				}
				b.ReportMetric(float64(peak.Load()-base)/(1<<20), "peak-growth-MiB")
				b.ReportMetric(float64(kept)/(1<<20), "set-MiB")
				b.ReportMetric(float64(took.Milliseconds()), "ms-to-set")
				runtime.KeepAlive(sub)
			}
		})
	}
}

// generatedFeed writes a snapshot of n revoked certificates, in parts or
// as one event, then ends the stream.
func generatedFeed(n int, parts bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		at := time.Now()
		entry := func(i int) []byte {
			data, _ := json.Marshal(revocation.Event{Kind: revocation.KindRevoked, Serial: fmt.Sprintf("%032x", i+1<<60),
				Identity: fmt.Sprintf("spiffe://example.test/fleet/service-%d", i%5000), RevokedAt: at, Reason: 1, NotAfter: at.Add(24 * time.Hour)})
			return data
		}
		const seq = 5
		if !parts {
			fmt.Fprintf(w, "event: snapshot\ndata: {\"seq\":%d,\"revoked\":[", seq)
			for i := range n {
				if i > 0 {
					w.Write([]byte{','})
				}
				w.Write(entry(i))
			}
			fmt.Fprint(w, "],\"denied\":[]}\n\n")
			return
		}
		fmt.Fprintf(w, "event: snapshot-begin\ndata: {\"snapshot_seq\":%d}\n\n", seq)
		part := 0
		for i := 0; i < n; i += revocation.PartEntries {
			part++
			fmt.Fprintf(w, "event: snapshot-part\ndata: {\"snapshot_seq\":%d,\"part\":%d,\"revoked\":[", seq, part)
			for j := i; j < min(n, i+revocation.PartEntries); j++ {
				if j > i {
					w.Write([]byte{','})
				}
				w.Write(entry(j))
			}
			fmt.Fprint(w, "]}\n\n")
		}
		fmt.Fprintf(w, "event: snapshot-end\ndata: {\"snapshot_seq\":%d,\"parts\":%d,\"revoked\":%d,\"denied\":0}\n\n", seq, part, n)
	})
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
