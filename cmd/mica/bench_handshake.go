package main

import (
	"context"
	"time"

	"github.com/mica-pki/mica/internal/bench"
	"github.com/mica-pki/mica/internal/keys"
)

func runBenchHandshake(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench handshake")
	cfg := bench.HandshakeConfig{}
	fs.IntVar(&cfg.Concurrency, "concurrency", 8, "handshakes in flight")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to measure each case, split over the rounds")
	fs.IntVar(&cfg.Rounds, "rounds", 5, "alternate crypto/tls and mtls this many times, so drift on a busy machine hits both alike")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured run of every case before measuring")
	fs.IntVar(&cfg.Revoked, "revoked", 10000, "serials in the revocation set the mtls configs consult")
	fs.IntVar(&cfg.Peers, "peers", 16384, "distinct client certificates for the full-new-peer case (more than mtls remembers)")
	keyType := fs.String("key-type", string(keys.Default), "algorithm of the CA and the certificates' keys")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if cfg.Concurrency < 1 || cfg.Duration <= 0 || cfg.Rounds < 1 || cfg.Revoked < 0 || cfg.Warmup < 0 || cfg.Peers < 1 {
		return usageError("--concurrency, --rounds and --peers must be at least 1, --duration positive, --revoked and --warmup not negative")
	}
	var err error
	if cfg.KeyType, err = keys.ParseAlgorithm(*keyType); err != nil {
		return usageError("%v", err)
	}
	tuneRuntime(env)
	res, err := bench.Handshake(ctx, cfg)
	if err != nil {
		return err
	}
	return printBench(env, *asJSON, res, res.WriteText)
}
