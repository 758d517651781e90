package sqlrec

import (
	"encoding/json"
	"fmt"

	"github.com/mica-pki/mica/internal/store"
)

// CertColumns is the column list ScanCertificate expects, in order.
const CertColumns = "serial, fingerprint, identity, sans, profile, requester, source_addr, " +
	"not_before, not_after, issuer, status, revoked_at, revocation_reason, renewed_from, der, event_seq, owner"

// EventColumns is the column list ScanEvent expects, in order.
const EventColumns = "seq, at, actor, source, action, serial, fingerprint, identity, profile, outcome, detail, leaf_index, leaf_hash"

// ScanCertificate reads one row selected with CertColumns through scan
// (the Scan method of the engine's row type).
func ScanCertificate(scan func(dest ...any) error) (store.Certificate, error) {
	var (
		c                   store.Certificate
		sans, status        string
		notBefore, notAfter int64
		revokedAt           *int64
		reason              int64
	)
	err := scan(&c.Serial, &c.Fingerprint, &c.Identity, &sans, &c.Profile, &c.Requester,
		&c.SourceAddr, &notBefore, &notAfter, &c.Issuer, &status, &revokedAt, &reason,
		&c.RenewedFrom, &c.DER, &c.EventSeq, &c.Owner)
	if err != nil {
		return store.Certificate{}, err
	}
	if err := json.Unmarshal([]byte(sans), &c.SANs); err != nil {
		return store.Certificate{}, fmt.Errorf("decode SANs of certificate %s: %w", c.Serial, err)
	}
	if len(c.SANs) == 0 {
		c.SANs = nil
	}
	c.NotBefore, c.NotAfter = FromMicros(notBefore), FromMicros(notAfter)
	c.Status = store.Status(status)
	if revokedAt != nil {
		c.RevokedAt = FromMicros(*revokedAt)
	}
	c.RevocationReason = int(reason)
	return c, nil
}

// ScanEvent reads one row selected with EventColumns.
func ScanEvent(scan func(dest ...any) error) (store.Event, error) {
	var (
		ev        store.Event
		at        int64
		action    string
		leafIndex *int64
	)
	err := scan(&ev.Seq, &at, &ev.Actor, &ev.Source, &action, &ev.Serial, &ev.Fingerprint,
		&ev.Identity, &ev.Profile, &ev.Outcome, &ev.Detail, &leafIndex, &ev.LeafHash)
	if err != nil {
		return store.Event{}, err
	}
	// Events recorded before the audit log existed have no leaf until the
	// engine backfills them at open.
	ev.LeafIndex = -1
	if leafIndex != nil {
		ev.LeafIndex = *leafIndex
	}
	ev.Time, ev.Action = FromMicros(at), store.Action(action)
	return ev, nil
}

// CheckpointColumns is the column list ScanCheckpoint expects, in order.
const CheckpointColumns = "size, root, note, at"

// ScanCheckpoint reads one row selected with CheckpointColumns.
func ScanCheckpoint(scan func(dest ...any) error) (store.Checkpoint, error) {
	var (
		c  store.Checkpoint
		at int64
	)
	if err := scan(&c.Size, &c.Root, &c.Note, &at); err != nil {
		return store.Checkpoint{}, err
	}
	c.Time = FromMicros(at)
	return c, nil
}
