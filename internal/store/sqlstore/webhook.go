package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

var (
	_ store.WebhookStore      = (*Store)(nil)
	_ store.LeaseStore        = (*Store)(nil)
	_ store.ExpiryNoticeStore = (*Store)(nil)
)

// Webhook state, leases and expiry notices are small direct writes, like
// ACME's: each commits before it returns.

const webhookColumns = "e.name, e.cursor_seq, e.last_attempt, e.last_success, e.last_error, e.failures," +
	" (SELECT count(*) FROM webhook_dead_letters d WHERE d.endpoint = e.name)"

func scanWebhookState(scan scanFunc) (store.WebhookState, error) {
	var st store.WebhookState
	var attempt, success int64
	if err := scan(&st.Endpoint, &st.Cursor, &attempt, &success, &st.LastError, &st.Failures, &st.DeadLetters); err != nil {
		return st, err
	}
	st.LastAttempt, st.LastSuccess = optionalMicros(attempt), optionalMicros(success)
	return st, nil
}

// optionalMicros reads a time stored as 0 for never.
func optionalMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}

// InitWebhook implements store.WebhookStore.
func (s *Store) InitWebhook(ctx context.Context, endpoint string, cursor int64) (store.WebhookState, error) {
	_, err := s.write.Exec(ctx, s.d.rebind("INSERT INTO webhook_endpoints (name, cursor_seq, last_attempt, last_success, last_error, failures)"+
		" VALUES (?, ?, 0, 0, '', 0) ON CONFLICT (name) DO NOTHING"), endpoint, cursor)
	if err != nil {
		return store.WebhookState{}, s.errorf("webhook %s: %w", endpoint, err)
	}
	// Read from the writer: a reader may not see the row just inserted yet.
	st, err := scanWebhookState(s.write.QueryRow(ctx, s.d.rebind("SELECT "+webhookColumns+" FROM webhook_endpoints e WHERE e.name = ?"), endpoint).Scan)
	if err != nil {
		return st, s.errorf("webhook %s: %w", endpoint, err)
	}
	return st, nil
}

// WebhookStates implements store.WebhookStore.
func (s *Store) WebhookStates(ctx context.Context) ([]store.WebhookState, error) {
	return list(ctx, s, "webhook states", scanWebhookState, query{SQL: "SELECT " + webhookColumns + " FROM webhook_endpoints e ORDER BY e.name"}, nil)
}

// AdvanceWebhook implements store.WebhookStore: one compare-and-swap on
// the cursor, so that two servers cannot both move it.
func (s *Store) AdvanceWebhook(ctx context.Context, endpoint string, from, to int64, success time.Time) error {
	var n int64
	var err error
	if success.IsZero() {
		n, err = s.write.Exec(ctx, s.d.rebind("UPDATE webhook_endpoints SET cursor_seq = ? WHERE name = ? AND cursor_seq = ?"), to, endpoint, from)
	} else {
		n, err = s.write.Exec(ctx, s.d.rebind("UPDATE webhook_endpoints SET cursor_seq = ?, last_success = ?, last_attempt = ?, failures = 0"+
			" WHERE name = ? AND cursor_seq = ?"), to, micros(success), micros(success), endpoint, from)
	}
	switch {
	case err != nil:
		return s.errorf("advance webhook %s: %w", endpoint, err)
	case n == 0:
		return s.errorf("webhook %s is no longer at event %d: %w", endpoint, from, store.ErrConflict)
	}
	return nil
}

// NoteWebhookFailure implements store.WebhookStore.
func (s *Store) NoteWebhookFailure(ctx context.Context, endpoint string, at time.Time, errText string, failures int) error {
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	_, err := s.write.Exec(ctx, s.d.rebind("UPDATE webhook_endpoints SET last_attempt = ?, last_error = ?, failures = ? WHERE name = ?"),
		micros(at), errText, failures, endpoint)
	if err != nil {
		return s.errorf("webhook %s: %w", endpoint, err)
	}
	return nil
}

// AddDeadLetter implements store.WebhookStore.
func (s *Store) AddDeadLetter(ctx context.Context, d store.DeadLetter) error {
	if len(d.Error) > 1024 {
		d.Error = d.Error[:1024]
	}
	_, err := s.write.Exec(ctx, s.d.rebind("INSERT INTO webhook_dead_letters (endpoint, seq, attempts, status, error, at) VALUES (?, ?, ?, ?, ?, ?)"+
		" ON CONFLICT (endpoint, seq) DO NOTHING"), d.Endpoint, d.Seq, d.Attempts, d.Status, d.Error, micros(d.At))
	if err != nil {
		return s.errorf("webhook %s: dead letter %d: %w", d.Endpoint, d.Seq, err)
	}
	return nil
}

// DeadLetters implements store.WebhookStore.
func (s *Store) DeadLetters(ctx context.Context, endpoint string, most int) ([]store.DeadLetter, error) {
	if most <= 0 {
		most = 100
	}
	most = min(most, maxLimit)
	q := query{SQL: s.d.rebind(fmt.Sprintf("SELECT endpoint, seq, attempts, status, error, at FROM webhook_dead_letters WHERE endpoint = ? ORDER BY seq DESC LIMIT %d", most)),
		Args: []any{endpoint}}
	return list(ctx, s, "dead letters", func(scan scanFunc) (store.DeadLetter, error) {
		var d store.DeadLetter
		var at int64
		err := scan(&d.Endpoint, &d.Seq, &d.Attempts, &d.Status, &d.Error, &at)
		d.At = fromMicros(at)
		return d, err
	}, q, nil)
}

// TakeLease implements store.LeaseStore in one statement: insert, or take
// over a lease that is owner's or has run out.
func (s *Store) TakeLease(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	if ttl <= 0 || owner == "" {
		return false, s.errorf("lease %s: a lease needs an owner and a positive TTL", name)
	}
	n, err := s.write.Exec(ctx, s.d.rebind("INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?)"+
		" ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires"+
		" WHERE leases.owner = excluded.owner OR leases.expires < ?"), name, owner, micros(now.Add(ttl)), micros(now))
	if err != nil {
		return false, s.errorf("lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ExpiringWithoutNotice implements store.ExpiryNoticeStore: the
// certificates mica issued that are at risk (as in ExpiringReport) and the
// discovered ones still seen and not in the inventory, whose remaining
// life is within f.Within and under 1/f.LifeDivisor of their lifetime.
func (s *Store) ExpiringWithoutNotice(ctx context.Context, f store.NoticeFilter) (_ []store.ExpiryCandidate, err error) {
	ctx, end := s.call(ctx, "expiry notices", false)
	defer end(&err)
	q, err := noticesQuery(f, &s.d)
	if err != nil {
		return nil, s.errorf("expiry notices: %w", err)
	}
	q.Args = s.d.planEach(q.Args)
	return list(ctx, s, "expiry notices", func(scan scanFunc) (store.ExpiryCandidate, error) {
		var c store.ExpiryCandidate
		var discovered int
		var notAfter int64
		err := scan(&c.Fingerprint, &c.Serial, &c.Identity, &c.Profile, &discovered, &c.Owner, &notAfter)
		c.Discovered, c.NotAfter = discovered == 1, fromMicros(notAfter)
		return c, err
	}, q, nil)
}

// noticesQuery is ExpiringWithoutNotice's query.
func noticesQuery(f store.NoticeFilter, d *Dialect) (query, error) {
	if f.Now.IsZero() || f.Within <= 0 || f.LifeDivisor < 1 {
		return query{}, errors.New("the filter needs Now, a positive Within and a LifeDivisor of at least 1")
	}
	n, err := limit(f.Limit)
	if err != nil {
		return query{}, err
	}
	now, before := micros(f.Now), micros(f.Now.Add(f.Within))
	atRisk := func(t string) string {
		return fmt.Sprintf("%[1]s.not_after > ? AND %[1]s.not_after <= ? AND %[2]d * (%[1]s.not_after - ?) < %[1]s.not_after - %[1]s.not_before"+
			" AND NOT EXISTS (SELECT 1 FROM expiry_notices x WHERE x.fingerprint = %[1]s.fingerprint)", t, f.LifeDivisor)
	}
	// Superseded as in ExpiringReport: read from the row (migration 0016).
	q := d.rebind("SELECT c.fingerprint, c.serial, c.identity, c.profile, 0, c.owner, c.not_after FROM certificates c" +
		" WHERE c.status = 'active' AND " + atRisk("c") + " AND c.superseded_until <= ?" +
		" UNION ALL SELECT d.fingerprint, d.serial, d.identity, '', 1, d.owner, d.not_after FROM discovered_certificates d" +
		" WHERE d.gone_at IS NULL AND " + atRisk("d") +
		" AND NOT EXISTS (SELECT 1 FROM certificates i WHERE i.fingerprint = d.fingerprint)" +
		fmt.Sprintf(" ORDER BY 7, 1 LIMIT %d", n))
	return query{SQL: q, Args: []any{now, before, now, now, now, before, now}}, nil
}

// AddExpiryNotice implements store.ExpiryNoticeStore; a second notice for
// one certificate changes nothing.
func (s *Store) AddExpiryNotice(ctx context.Context, fingerprint string, seq int64, at time.Time) error {
	_, err := s.write.Exec(ctx, s.d.rebind("INSERT INTO expiry_notices (fingerprint, event_seq, at) VALUES (?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING"),
		fingerprint, seq, micros(at))
	if err != nil {
		return s.errorf("expiry notice for %s: %w", fingerprint, err)
	}
	return nil
}
