package authority

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// expiryNoticeLifeDivisor says when a certificate is announced as about to
// expire: with less than a quarter of its life left. Agents renew at two
// thirds of a lifetime, so a certificate of any lifetime that gets there
// has missed its renewal; one renewed on time is superseded and never
// announced.
const expiryNoticeLifeDivisor = 4

// DefaultExpiryNoticeWindow is how long before expiry a certificate at risk
// is announced, unless configured.
const DefaultExpiryNoticeWindow = 14 * 24 * time.Hour

// NoticeExpiring records one cert.expiring event for each certificate at
// risk (issued by mica and not renewed in time, or discovered and still
// deployed) that expires within `within` and was not announced before,
// and returns how many it recorded. Each is announced once: a notice is
// noted after its event, so a crash in between announces it again (at
// least once, never lost).
func (a *Authority) NoticeExpiring(ctx context.Context, within time.Duration) (int, error) {
	ns, ok := a.store.(store.ExpiryNoticeStore)
	if !ok || within <= 0 {
		return 0, nil
	}
	now := a.now()
	list, err := ns.ExpiringWithoutNotice(ctx, store.NoticeFilter{Now: now, Within: within, LifeDivisor: expiryNoticeLifeDivisor})
	if err != nil {
		return 0, fmt.Errorf("authority: expiry notices: %w", err)
	}
	announced := map[string]bool{}
	for _, c := range list {
		if announced[c.Fingerprint] { // issued and discovered: one notice
			continue
		}
		announced[c.Fingerprint] = true
		source := "issued by mica"
		if c.Discovered {
			source = "discovered deployed"
		}
		detail := fmt.Sprintf("%s, expires %s (in %s)", source, c.NotAfter.UTC().Format(time.RFC3339), c.NotAfter.Sub(now).Round(time.Minute))
		if c.Owner != "" {
			detail += "; owner " + c.Owner
		}
		ev := store.Event{Time: now, Actor: SystemPrincipal, Action: store.ActionCertExpiring, Serial: c.Serial, Fingerprint: c.Fingerprint,
			Identity: c.Identity, Profile: c.Profile, Outcome: "ok", Detail: detail}
		if err := a.store.RecordEvent(ctx, &ev); err != nil {
			return len(announced) - 1, fmt.Errorf("authority: expiry notice: %w", err)
		}
		if err := ns.AddExpiryNotice(ctx, c.Fingerprint, ev.Seq, now); err != nil {
			return len(announced), fmt.Errorf("authority: expiry notice: %w", err)
		}
	}
	return len(announced), nil
}

// ExpiryNotices configures RunExpiryNotices.
type ExpiryNotices struct {
	// Within is how long before expiry; DefaultExpiryNoticeWindow when 0.
	Within time.Duration
	// Every is how often to look; default 5m.
	Every time.Duration
	// Owner names this server in the lease that lets one server of those
	// sharing a database send the notices.
	Owner string
}

// RunExpiryNotices calls NoticeExpiring every cfg.Every while this server
// holds the expiry-notices lease, until ctx ends.
func (a *Authority) RunExpiryNotices(ctx context.Context, cfg ExpiryNotices) {
	leases, ok := a.store.(store.LeaseStore)
	if !ok {
		return
	}
	if cfg.Within <= 0 {
		cfg.Within = DefaultExpiryNoticeWindow
	}
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Minute
	}
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		held, err := leases.TakeLease(ctx, "expiry-notices", cfg.Owner, a.now(), 2*cfg.Every)
		if err == nil && held {
			_, err = a.NoticeExpiring(ctx, cfg.Within)
		}
		if err != nil && ctx.Err() == nil {
			a.log.LogAttrs(ctx, slog.LevelWarn, "expiry notices failed; retrying", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
