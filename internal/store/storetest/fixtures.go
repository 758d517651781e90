package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// base is the suite's clock: fixed, UTC, with sub-millisecond digits so a
// store that drops microseconds is caught.
var base = time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)

// DERSize is the size of the fake certificate bodies, close to a real
// leaf certificate.
const DERSize = 1024

// NewIssuance returns a valid, unique issuance with every field set: a
// random serial and a random DER body of DERSize bytes. Identity and
// profile vary with i.
func NewIssuance(i int) *store.Issuance {
	der := make([]byte, DERSize)
	rand.Read(der)
	serial := make([]byte, 16)
	rand.Read(serial)
	fp := sha256.Sum256(der)
	id := fmt.Sprintf("spiffe://example.test/svc/%d", i%7)
	c := store.Certificate{
		Serial:      hex.EncodeToString(serial),
		Fingerprint: hex.EncodeToString(fp[:]),
		Identity:    id,
		SANs:        []string{id, fmt.Sprintf("svc-%d.example.test", i), "192.0.2.7"},
		Profile:     fmt.Sprintf("profile-%d", i%3),
		Requester:   "spiffe://example.test/admin",
		SourceAddr:  "192.0.2.1:4433",
		NotBefore:   base.Add(-time.Minute),
		NotAfter:    base.Add(time.Duration(i%50+1) * time.Hour),
		Issuer:      "ab12cd34ef",
		Status:      store.StatusActive,
		RenewedFrom: "",
		DER:         der,
		// Chains start before the certificate: a renewal's.
		ChainStartedAt: base.Add(-48 * time.Hour),
	}
	return &store.Issuance{
		Certificate: c,
		Event: store.Event{
			Time: base, Actor: c.Requester, Source: c.SourceAddr, Action: store.ActionCertIssued,
			Serial: c.Serial, Fingerprint: c.Fingerprint, Identity: c.Identity, Profile: c.Profile,
			Outcome: "ok", Detail: fmt.Sprintf("issued #%d", i),
		},
	}
}

func withToken(iss *store.Issuance, jti string) *store.Issuance {
	iss.Token = &store.TokenUse{JTI: jti, ExpiresAt: base.Add(10 * time.Minute)}
	iss.Certificate.TokenJTI = jti
	return iss
}

func newJTI() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newEvent(action store.Action, identity string) *store.Event {
	return &store.Event{
		Time: base.Add(time.Second), Actor: "system", Source: "", Action: action,
		Identity: identity, Outcome: "ok", Detail: "detail of " + string(action),
	}
}

func record(t *testing.T, s store.Store, iss *store.Issuance) {
	t.Helper()
	if err := s.RecordIssuance(context.Background(), iss); err != nil {
		t.Fatalf("RecordIssuance(%s): %v", iss.Certificate.Serial, err)
	}
}

// sameCert reports the first difference between two certificates, or "".
// SANs compare as lists, so nil and empty are the same.
func sameCert(got, want store.Certificate) string {
	if !slices.Equal(got.SANs, want.SANs) {
		return fmt.Sprintf("SANs = %q, want %q", got.SANs, want.SANs)
	}
	got.SANs, want.SANs = nil, nil
	if !got.RevokedAt.Equal(want.RevokedAt) || !got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) ||
		!got.ChainStartedAt.Equal(want.ChainStartedAt) {
		return fmt.Sprintf("times = %v %v %v %v, want %v %v %v %v", got.NotBefore, got.NotAfter, got.RevokedAt, got.ChainStartedAt,
			want.NotBefore, want.NotAfter, want.RevokedAt, want.ChainStartedAt)
	}
	if got.NotAfter.Location() != time.UTC || got.NotBefore.Location() != time.UTC {
		return "times are not in UTC"
	}
	got.RevokedAt, want.RevokedAt = time.Time{}, time.Time{}
	got.NotBefore, want.NotBefore = time.Time{}, time.Time{}
	got.NotAfter, want.NotAfter = time.Time{}, time.Time{}
	got.ChainStartedAt, want.ChainStartedAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("got %+v\nwant %+v", got, want)
	}
	return ""
}

func sameEvent(got, want store.Event) string {
	if !got.Time.Equal(want.Time) {
		return fmt.Sprintf("Time = %v, want %v", got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("got %+v\nwant %+v", got, want)
	}
	return ""
}

func allEvents(t *testing.T, s store.Store) []store.Event {
	t.Helper()
	var all []store.Event
	var after int64
	for {
		page, err := s.Events(context.Background(), store.EventFilter{AfterSeq: after, Limit: 10000})
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
}

func eventsBySerial(t *testing.T, s store.Store) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, ev := range allEvents(t, s) {
		n[ev.Serial]++
	}
	return n
}

func checkIncreasing(t *testing.T, evs []store.Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("event %d has Seq %d after Seq %d: not strictly increasing", i, evs[i].Seq, evs[i-1].Seq)
		}
	}
}
