package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/testpki"
)

// BenchmarkDeepPage reads a page of 1,000 certificates nine tenths of the
// way through an inventory on SQLite, the way GET /v1/certificates did
// (Offset) and does (After, a cursor's place), with no filter and with
// the active ones, in pages of 1,000 and of 10. MICA_BENCH_CERTS sets the inventory's size (default
// 20,000); MICA_BENCH_DB keeps the loaded database for another run.
func BenchmarkDeepPage(b *testing.B) {
	ctx := context.Background()
	size := 20_000
	if v := os.Getenv("MICA_BENCH_CERTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	path := os.Getenv("MICA_BENCH_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "mica.db")
	}
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	have, err := st.CountCertificates(ctx, store.Filter{})
	if err != nil {
		b.Fatal(err)
	}
	if have < size {
		pki := testpki.New(b, "example.org")
		if _, err := Load(ctx, st, LoadConfig{Live: size - have, Issuer: pki.Intermediate, Signer: pki.IntermediateKey,
			IssuerID: authority.Fingerprint(pki.Intermediate.Raw), Now: now, Seed: uint64(have) + 1}); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		f    store.Filter
	}{
		{"all", store.Filter{}},
		{"active", store.Filter{Status: store.StatusActive, Now: now}},
	} {
		total, err := st.CountCertificates(ctx, tc.f)
		if err != nil {
			b.Fatal(err)
		}
		depth := total * 9 / 10
		byOffset := tc.f
		byOffset.Offset, byOffset.Limit = depth, 1000
		// The place a cursor names: the last certificate of the page
		// before (found once, the slow way, untimed).
		prev := tc.f
		prev.Offset, prev.Limit = depth-1, 1
		at, err := st.ListCertificates(ctx, prev)
		if err != nil || len(at) != 1 {
			b.Fatalf("the page before: %v", err)
		}
		byCursor := tc.f
		byCursor.After, byCursor.Limit = store.PositionOf(at[0]), 1001
		want, err := st.ListCertificates(ctx, byOffset)
		if err != nil {
			b.Fatal(err)
		}
		// A page of ten shows what the depth costs apart from reading
		// the page's own rows.
		tenByOffset, tenByCursor := byOffset, byCursor
		tenByOffset.Limit, tenByCursor.Limit = 10, 11
		for _, read := range []struct {
			name string
			f    store.Filter
		}{{"offset", byOffset}, {"cursor", byCursor}, {"offset-10", tenByOffset}, {"cursor-10", tenByCursor}} {
			b.Run(tc.name+"/"+read.name, func(b *testing.B) {
				for b.Loop() {
					got, err := st.ListCertificates(ctx, read.f)
					if err != nil {
						b.Fatal(err)
					}
					if len(got) == 0 || got[0].Serial != want[0].Serial {
						b.Fatalf("the page starts at %v, want %s", got, want[0].Serial)
					}
				}
				b.ReportMetric(float64(depth), "rows-before")
			})
		}
	}
}
