package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// CA slots are written as KindGuarded ops, like governance records: each
// change is a few conditional statements and its audit event, committed
// together, failing alone with store.ErrConflict when it lost a race.

const slotColumns = `id, kind, state, cert, fingerprint, parent, key_uri, key_sealed, cross_from_previous, cross_to_previous,
not_before, not_after, prepared_at, activated_at, retired_at, removed_at`

// CASlots implements store.CASlots.
func (s *Store) CASlots(ctx context.Context) ([]store.CASlot, error) {
	out, err := queryAll(ctx, s.read, "SELECT "+slotColumns+" FROM ca_slots ORDER BY id", nil, func(scan scanFunc) (store.CASlot, error) {
		var c store.CASlot
		var kind, state string
		var nb, na, prep, act, ret, rem int64
		err := scan(&c.ID, &kind, &state, &c.Cert, &c.Fingerprint, &c.Parent, &c.KeyURI, &c.KeySealed,
			&c.CrossFromPrevious, &c.CrossToPrevious, &nb, &na, &prep, &act, &ret, &rem)
		c.Kind, c.State = store.SlotKind(kind), store.SlotState(state)
		c.NotBefore, c.NotAfter, c.PreparedAt = fromMicros(nb), fromMicros(na), fromMicros(prep)
		c.ActivatedAt, c.RetiredAt, c.RemovedAt = optMicros(act), optMicros(ret), optMicros(rem)
		return c, err
	})
	if err != nil {
		return nil, s.errorf("read the CA slots: %w", err)
	}
	return out, nil
}

func optMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}

// AddCASlots implements store.CASlots. IDs are the next numbers; two
// servers racing for them conflict, like two preparing at once.
func (s *Store) AddCASlots(ctx context.Context, slots []*store.CASlot, ev *store.Event) error {
	if len(slots) == 0 {
		return s.errorf("add CA slots: no slot given")
	}
	var last int64
	if err := s.read.QueryRow(ctx, "SELECT COALESCE(MAX(id), 0) FROM ca_slots").Scan(&last); err != nil {
		return s.errorf("read the last CA slot: %w", err)
	}
	var guards []Guard
	var names []string
	for i, c := range slots {
		switch {
		case c.Kind != store.SlotRoot && c.Kind != store.SlotIntermediate:
			return s.errorf("add CA slot: kind %q is neither root nor intermediate", c.Kind)
		case c.State != store.SlotPrepared && c.State != store.SlotActive:
			return s.errorf("add CA slot: a new slot is prepared or active, not %q", c.State)
		case len(c.Cert) == 0 || c.Fingerprint == "" || c.NotAfter.IsZero() || c.PreparedAt.IsZero():
			return s.errorf("add CA slot: certificate, fingerprint, NotAfter and PreparedAt are required")
		}
		id := last + int64(i) + 1
		var activated int64
		if c.State == store.SlotActive {
			activated = micros(c.PreparedAt)
		}
		guards = append(guards, Guard{Want: 1,
			SQL: `INSERT INTO ca_slots (` + slotColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0) ON CONFLICT DO NOTHING`,
			Args: []any{id, string(c.Kind), string(c.State), c.Cert, c.Fingerprint, c.Parent, c.KeyURI, nilIfEmpty(c.KeySealed),
				nilIfEmpty(c.CrossFromPrevious), nilIfEmpty(c.CrossToPrevious), micros(c.NotBefore), micros(c.NotAfter),
				micros(c.PreparedAt), activated}})
		names = append(names, fmt.Sprintf("%s %d", c.Kind, id))
	}
	if err := s.guarded(ctx, "add CA slot "+strings.Join(names, ", "), ev, guards...); err != nil {
		return err
	}
	for i, c := range slots {
		c.ID = last + int64(i) + 1
		if c.State == store.SlotActive {
			c.ActivatedAt = c.PreparedAt
		}
	}
	return nil
}

func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// MoveCASlots implements store.CASlots.
func (s *Store) MoveCASlots(ctx context.Context, moves []store.SlotMove, at time.Time, ev *store.Event) error {
	if len(moves) == 0 {
		return s.errorf("move CA slots: no move given")
	}
	var guards []Guard
	var names []string
	for _, m := range moves {
		col := ""
		switch m.To {
		case store.SlotActive:
			col = "activated_at"
		case store.SlotRetired:
			col = "retired_at"
		case store.SlotRemoved:
			col = "removed_at"
		default:
			return s.errorf("move CA slot %d: a slot moves to active, retired or removed, not %q", m.ID, m.To)
		}
		guards = append(guards, Guard{Want: 1,
			SQL:  `UPDATE ca_slots SET state = ?, ` + col + ` = ? WHERE id = ? AND state = ?`,
			Args: []any{string(m.To), micros(at), m.ID, string(m.From)}})
		names = append(names, fmt.Sprintf("slot %d %s → %s", m.ID, m.From, m.To))
	}
	return s.guarded(ctx, "move CA "+strings.Join(names, ", "), ev, guards...)
}

// IssuedUntil implements store.CASlots.
func (s *Store) IssuedUntil(ctx context.Context, issuer, except string) (time.Time, error) {
	var last int64
	err := s.read.QueryRow(ctx, s.d.rebind(`SELECT COALESCE(MAX(not_after), 0) FROM certificates WHERE issuer = ? AND profile <> ?`), issuer, except).Scan(&last)
	if err != nil {
		return time.Time{}, s.errorf("read when issuer %s's certificates expire: %w", issuer, err)
	}
	return optMicros(last), nil
}
