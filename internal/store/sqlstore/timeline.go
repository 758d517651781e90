package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// maxTimelineDays bounds a timeline's window.
const maxTimelineDays = 366

// ExpiryTimeline implements store.Store: one GROUP BY over the live
// certificates' (status, not_after) index range, the day being the whole
// number of days from f.From (integer division on both engines).
func (s *Store) ExpiryTimeline(ctx context.Context, f store.TimelineFilter) (_ []store.DayCount, err error) {
	ctx, end := s.call(ctx, "expiry timeline", false)
	defer end(&err)
	switch {
	case f.Days < 1 || f.Days > maxTimelineDays:
		return nil, s.errorf("expiry timeline: %d days: ask for 1 to %d", f.Days, maxTimelineDays)
	case f.Now.IsZero() || f.From.After(f.Now):
		return nil, s.errorf("expiry timeline: %w", errors.New("the window must start at or before Now"))
	}
	day := int64(24 * time.Hour / time.Microsecond)
	until := f.From.Add(time.Duration(f.Days) * 24 * time.Hour)
	q := query{SQL: s.d.rebind(fmt.Sprintf(`SELECT (not_after - ?) / %d AS expiry_day, profile, COUNT(*) FROM certificates
WHERE status = 'active' AND not_after >= ? AND not_after < ? GROUP BY expiry_day, profile`, day)),
		Args: []any{micros(f.From), micros(f.Now), micros(until)}}
	return list(ctx, s, "expiry timeline", func(scan scanFunc) (store.DayCount, error) {
		var c store.DayCount
		var d int64
		err := scan(&d, &c.Profile, &c.Count)
		c.Day = int(d)
		return c, err
	}, q, nil)
}
