package main

import (
	"context"

	"github.com/mica-pki/mica/internal/bench"
)

// runBenchLiveRevocation measures the promise that a revocation reaches
// live connections, not only new handshakes (bench.LiveRevocation).
func runBenchLiveRevocation(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench revoke-live")
	conns := fs.Int("connections", 1000, "kept-alive mTLS connections held open at once")
	clients := fs.Int("clients", 100, "client certificates the connections are spread over; each is revoked in turn")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *clients < 1 || *conns < *clients {
		return usageError("--clients must be at least 1 and --connections at least --clients")
	}
	tuneRuntime(env)
	s, err := openBenchServer(ctx, bench.Options{DB: *db, Revocation: true})
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := bench.LiveRevocation(ctx, s, *conns, *clients)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
}
