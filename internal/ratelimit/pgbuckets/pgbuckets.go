// Package pgbuckets keeps rate-limit token buckets in PostgreSQL, so that
// a limit holds across every replica sharing the database (a
// ratelimit.Backend). One bucket is one row of rate_buckets (migration
// 0012): its tokens and when they were counted, refilled by arithmetic at
// the next take, so a request costs one statement and no background work
// but a sweep of the rows that have refilled.
//
// Taking is one INSERT … ON CONFLICT DO UPDATE … WHERE over every bucket a
// request needs: each row is locked and updated from its latest version,
// so two replicas never spend the same token; the rows come in a fixed
// order, so two requests cannot deadlock. When one bucket is empty the
// tokens taken from the others are given back. The counters are not worth
// an fsync: the pool runs with synchronous_commit off (a crash of the
// database forgets the last few takes, which only lets a few requests
// more through), and each take is bounded by a timeout, after which the
// caller falls back to the replica's own buckets.
package pgbuckets

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mica-pki/mica/internal/ratelimit"
)

// Timeout bounds each take: a rate limit must not make a request wait for
// a database that does not answer.
const Timeout = 2 * time.Second

// Backend is a ratelimit.Backend on PostgreSQL.
type Backend struct {
	pool *pgxpool.Pool
}

var _ ratelimit.Backend = (*Backend)(nil)

// Open connects to the database at url (the one the store uses, with the
// rate_buckets table) with a small pool of its own.
func Open(ctx context.Context, url string) (*Backend, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgbuckets: %w", err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	cfg.ConnConfig.RuntimeParams["application_name"] = "mica-ratelimit"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgbuckets: %w", err)
	}
	return &Backend{pool: pool}, nil
}

// Close closes the pool.
func (b *Backend) Close() { b.pool.Close() }

const takeSQL = `
INSERT INTO rate_buckets AS b (bucket, key, tokens, updated_us, burst, refill, full_us)
SELECT c.bucket, c.key, c.burst - 1, $1, c.burst, c.refill, $1 + CEIL(1 / c.refill)::BIGINT
FROM unnest($2::text[], $3::text[], $4::float8[], $5::float8[]) AS c(bucket, key, burst, refill)
ORDER BY c.bucket, c.key
ON CONFLICT (bucket, key) DO UPDATE SET
	tokens     = LEAST(EXCLUDED.burst, b.tokens + GREATEST($1 - b.updated_us, 0) * EXCLUDED.refill) - 1,
	updated_us = $1,
	burst      = EXCLUDED.burst,
	refill     = EXCLUDED.refill,
	full_us    = $1 + CEIL((EXCLUDED.burst + 1 - LEAST(EXCLUDED.burst, b.tokens + GREATEST($1 - b.updated_us, 0) * EXCLUDED.refill)) / EXCLUDED.refill)::BIGINT
WHERE LEAST(EXCLUDED.burst, b.tokens + GREATEST($1 - b.updated_us, 0) * EXCLUDED.refill) >= 1
RETURNING b.bucket, b.key`

const giveSQL = `
UPDATE rate_buckets AS b SET tokens = LEAST(b.burst, b.tokens + 1)
FROM unnest($1::text[], $2::text[]) AS c(bucket, key)
WHERE b.bucket = c.bucket AND b.key = c.key`

const levelSQL = `
SELECT b.bucket, b.key, LEAST(b.burst, b.tokens + GREATEST($1 - b.updated_us, 0) * b.refill), b.refill
FROM rate_buckets AS b JOIN unnest($2::text[], $3::text[]) AS c(bucket, key) ON b.bucket = c.bucket AND b.key = c.key`

type id struct{ bucket, key string }

// TakeAll implements ratelimit.Backend.
func (b *Backend) TakeAll(ctx context.Context, now time.Time, claims []ratelimit.SharedClaim) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	nowUS := now.UnixMicro()
	// One row per bucket and key: a statement may not update a row twice.
	order := make([]int, 0, len(claims))
	seen := map[id]bool{}
	var buckets, keys []string
	var bursts, refills []float64
	for i, c := range claims {
		k := id{c.Bucket, c.Key}
		if seen[k] || c.Limit.Rate.Unlimited() {
			continue
		}
		seen[k] = true
		order = append(order, i)
		buckets, keys = append(buckets, c.Bucket), append(keys, c.Key)
		bursts = append(bursts, float64(max(c.Limit.Burst, 1)))
		refills = append(refills, float64(c.Limit.Rate.Events)/float64(c.Limit.Rate.Per.Microseconds()))
	}
	if len(order) == 0 {
		return -1, 0, nil
	}
	rows, err := b.pool.Query(ctx, takeSQL, nowUS, buckets, keys, bursts, refills)
	if err != nil {
		return 0, 0, fmt.Errorf("pgbuckets: take: %w", err)
	}
	taken := map[id]bool{}
	for rows.Next() {
		var k id
		if err := rows.Scan(&k.bucket, &k.key); err != nil {
			rows.Close()
			return 0, 0, fmt.Errorf("pgbuckets: take: %w", err)
		}
		taken[k] = true
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("pgbuckets: take: %w", err)
	}
	if len(taken) == len(order) {
		return -1, 0, nil
	}
	// Refused: give back what was taken, and say how long until every
	// refused bucket has a token.
	var giveB, giveK, refB, refK []string
	refused := -1
	for j, i := range order {
		k := id{buckets[j], keys[j]}
		if taken[k] {
			giveB, giveK = append(giveB, k.bucket), append(giveK, k.key)
			continue
		}
		if refused < 0 {
			refused = i
		}
		refB, refK = append(refB, k.bucket), append(refK, k.key)
	}
	if len(giveB) > 0 {
		if _, err := b.pool.Exec(ctx, giveSQL, giveB, giveK); err != nil {
			return refused, time.Second, fmt.Errorf("pgbuckets: giving back tokens: %w", err)
		}
	}
	wait := time.Second
	lrows, err := b.pool.Query(ctx, levelSQL, nowUS, refB, refK)
	if err != nil {
		return refused, wait, nil // refused all the same; the wait is a guess
	}
	defer lrows.Close()
	var longest float64
	for lrows.Next() {
		var bucket, key string
		var level, refill float64
		if lrows.Scan(&bucket, &key, &level, &refill) == nil && refill > 0 {
			longest = max(longest, (1-level)/refill)
		}
	}
	if longest > 0 {
		wait = time.Duration(math.Ceil(longest)) * time.Microsecond
	}
	return refused, wait, nil
}

// Sweep deletes the buckets that have refilled by now: a missing row is a
// full bucket.
func (b *Backend) Sweep(ctx context.Context, now time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*Timeout)
	defer cancel()
	tag, err := b.pool.Exec(ctx, `DELETE FROM rate_buckets WHERE full_us < $1`, now.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("pgbuckets: sweep: %w", err)
	}
	return tag.RowsAffected(), nil
}

// errNoTable is what a take says before migration 0012 ran.
var errNoTable = errors.New("pgbuckets: the rate_buckets table is missing: start `mica serve` once with this version to migrate the database")

// Check makes sure the table is there, so that a misconfiguration shows at
// start-up rather than as fallbacks on every request.
func (b *Backend) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*Timeout)
	defer cancel()
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'rate_buckets'`).Scan(&n); err != nil {
		return fmt.Errorf("pgbuckets: %w", err)
	}
	if n == 0 {
		return errNoTable
	}
	return nil
}
