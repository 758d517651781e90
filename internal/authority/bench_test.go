package authority_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
)

// BenchmarkRenew is a renewal in process, as the REST API asks for one
// after the TLS handshake: authenticate the connection's chain, then renew
// (prelude, policy, deny list, lint, sign, self-check, durable SQLite
// commit, audit event). It has no TLS, HTTP, JSON or request log, so its
// rate is an upper bound on a server's and its CPU time a lower bound:
// the headline figure is `mica bench renew --spawn`. The sub-benchmarks
// are each other's baselines in one run: the connection's memo kept
// (later requests read only the leaf's status) or not (the chain verified
// and the record read on every request), and the key kept (no CSR) or new
// (a CSR checked each time). cpu-ns/op is the process's CPU time, user
// and system, per renewal.
func BenchmarkRenew(b *testing.B) {
	for _, c := range []struct {
		name       string
		memo, keep bool
	}{
		{"memo/keep-key", true, true},
		{"memo/new-key", true, false},
		{"no-memo/keep-key", false, true},
		{"no-memo/new-key", false, false},
	} {
		b.Run(c.name, func(b *testing.B) { benchRenew(b, c.memo, c.keep) })
	}
}

// renewers is about how many identities renew at once: SQLite commits batch
// what is queued, as on a server with that many agents renewing.
const renewers = 16

func benchRenew(b *testing.B, memo, keep bool) {
	f := authoritytest.New(b)
	ctx := context.Background()
	src := netip.MustParseAddr("127.0.0.1")
	type worker struct {
		chain []*x509.Certificate
		memo  *authority.ConnMemo
		csrs  [][]byte
	}
	// RunParallel starts parallelism × GOMAXPROCS goroutines, a worker
	// each.
	parallelism := max(1, renewers/runtime.GOMAXPROCS(0))
	n := parallelism * runtime.GOMAXPROCS(0)
	workers := make(chan *worker, n)
	for i := range n {
		cred := f.EnrollCred(b, "service", fmt.Sprintf("spiffe://example.org/billing/bench-%d", i))
		w := &worker{chain: []*x509.Certificate{cred.Issued.Certificate, cred.Issued.Chain[0]}}
		if memo {
			w.memo = new(authority.ConnMemo)
		}
		if !keep {
			for range 8 {
				w.csrs = append(w.csrs, authoritytest.CSR(b))
			}
		}
		workers <- w
	}
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	start := processCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := <-workers
		for i := 0; pb.Next(); i++ {
			peer, err := f.Authority.AuthenticateConn(ctx, w.memo, w.chain, src)
			if err != nil {
				b.Error(err)
				return
			}
			req := authority.RenewRequest{Peer: peer, KeepKey: keep, Source: src}
			if !keep {
				req.CSR = w.csrs[i%len(w.csrs)]
			}
			if _, err := f.Authority.Renew(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
