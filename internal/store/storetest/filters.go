package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// model is the reference semantics of Filter, written the plain way.
func model(certs []store.Certificate, f store.Filter) []string {
	var out []store.Certificate
	for _, c := range certs {
		switch {
		case f.Identity != "" && c.Identity != f.Identity,
			f.Profile != "" && c.Profile != f.Profile,
			f.Owner != "" && c.Owner != f.Owner,
			!f.After.IsZero() && !positionAfter(c, f.After),
			f.Status == store.StatusActive && (c.Status != store.StatusActive || c.NotAfter.Before(f.Now)),
			f.Status == store.StatusExpired && (c.Status != store.StatusActive || !c.NotAfter.Before(f.Now)),
			f.Status == store.StatusRevoked && c.Status != store.StatusRevoked,
			!f.ExpiresBefore.IsZero() && !c.NotAfter.Before(f.ExpiresBefore):
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b store.Certificate) int {
		if c := a.NotAfter.Compare(b.NotAfter); c != 0 {
			return c
		}
		return strings.Compare(a.Serial, b.Serial)
	})
	limit := f.Limit
	if limit == 0 {
		limit = 1000
	}
	serials := []string{}
	for i, c := range out {
		if i >= f.Offset && len(serials) < limit {
			serials = append(serials, c.Serial)
		}
	}
	return serials
}

// positionAfter reports whether c comes after p in the inventory's order.
func positionAfter(c store.Certificate, p store.Position) bool {
	if c := c.NotAfter.Compare(p.NotAfter); c != 0 {
		return c > 0
	}
	return c.Serial > p.Serial
}

func serialsOf(cs []store.Certificate) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Serial)
	}
	return out
}

func testFilters(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	// 60 certificates over 7 identities and 3 profiles, expiring hourly
	// from base+1h (several sharing a NotAfter, so the serial tie-break
	// matters), every fifth revoked.
	var certs []store.Certificate
	isss := make([]*store.Issuance, 60)
	for i := range isss {
		isss[i] = NewIssuance(i % 20)
		isss[i].Certificate.Owner = fmt.Sprintf("spiffe://example.test/mica/admin/owner-%d", i%4)
	}
	for i, err := range recordAll(s, isss) {
		if err != nil {
			t.Fatalf("RecordIssuance %d: %v", i, err)
		}
	}
	for i, iss := range isss {
		c := iss.Certificate
		if i%5 == 0 {
			at := base.Add(time.Minute)
			if err := s.Revoke(ctx, c.Serial, 1, at, newEvent(store.ActionCertRevoked, c.Identity)); err != nil {
				t.Fatal(err)
			}
			c.Status, c.RevokedAt, c.RevocationReason = store.StatusRevoked, at, 1
		}
		certs = append(certs, c)
	}
	now := base.Add(8 * time.Hour) // exactly some NotAfter: active includes it
	id, prof := isss[3].Certificate.Identity, isss[4].Certificate.Profile
	tests := []struct {
		name string
		f    store.Filter
	}{
		{"All", store.Filter{}},
		{"Identity", store.Filter{Identity: id}},
		{"Profile", store.Filter{Profile: prof}},
		{"UnknownIdentity", store.Filter{Identity: "spiffe://example.test/nobody"}},
		{"Active", store.Filter{Status: store.StatusActive, Now: now}},
		{"Expired", store.Filter{Status: store.StatusExpired, Now: now}},
		{"Revoked", store.Filter{Status: store.StatusRevoked}},
		{"ExpiresBefore", store.Filter{ExpiresBefore: base.Add(12 * time.Hour)}},
		{"ExpiresBeforeExactNotAfter", store.Filter{ExpiresBefore: isss[7].Certificate.NotAfter}},
		{"IdentityActive", store.Filter{Identity: id, Status: store.StatusActive, Now: now}},
		{"ProfileExpiredBefore", store.Filter{Profile: prof, Status: store.StatusExpired, Now: now, ExpiresBefore: base.Add(5 * time.Hour)}},
		{"IdentityProfileRevoked", store.Filter{Identity: id, Profile: isss[3].Certificate.Profile, Status: store.StatusRevoked}},
		{"ActiveExpiringSoon", store.Filter{Status: store.StatusActive, Now: now, ExpiresBefore: now.Add(5 * time.Hour)}},
		{"Limit", store.Filter{Limit: 7}},
		{"Offset", store.Filter{Offset: 13}},
		{"LimitOffset", store.Filter{Limit: 9, Offset: 20}},
		{"OffsetPastEnd", store.Filter{Offset: 100}},
		{"Owner", store.Filter{Owner: isss[2].Certificate.Owner}},
		{"OwnerProfileActive", store.Filter{Owner: isss[2].Certificate.Owner, Profile: prof, Status: store.StatusActive, Now: now}},
		{"After", store.Filter{After: store.PositionOf(isss[17].Certificate)}},
		{"AfterSharedNotAfter", store.Filter{After: store.Position{NotAfter: isss[17].Certificate.NotAfter}}},
		{"AfterRevoked", store.Filter{Status: store.StatusRevoked, After: store.PositionOf(isss[25].Certificate), Limit: 4}},
		{"AfterIdentity", store.Filter{Identity: id, After: store.PositionOf(isss[23].Certificate)}},
		{"ActiveAfterEarlier", store.Filter{Status: store.StatusActive, Now: now, After: store.PositionOf(isss[2].Certificate)}},
		{"ActiveAfterLater", store.Filter{Status: store.StatusActive, Now: now, After: store.PositionOf(isss[12].Certificate)}},
		{"ActiveLimitOffset", store.Filter{Status: store.StatusActive, Now: now, Limit: 5, Offset: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := model(certs, tc.f)
			got, err := s.ListCertificates(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListCertificates: %v", err)
			}
			if !slices.Equal(serialsOf(got), want) {
				t.Errorf("ListCertificates = %v\nwant %v", serialsOf(got), want)
			}
			all := tc.f
			all.Limit, all.Offset, all.After = 0, 0, store.Position{}
			n, err := s.CountCertificates(ctx, tc.f)
			if err != nil {
				t.Fatalf("CountCertificates: %v", err)
			}
			if wantN := len(model(certs, all)); n != wantN {
				t.Errorf("CountCertificates = %d, want %d (After, Limit and Offset do not apply)", n, wantN)
			}
		})
	}
	// Paging with After, one page after another, lists every certificate
	// once and in order, whatever the filter.
	for _, f := range []store.Filter{{}, {Profile: prof}, {Owner: isss[1].Certificate.Owner}, {Status: store.StatusActive, Now: now},
		{Status: store.StatusRevoked}, {Status: store.StatusExpired, Now: now}, {ExpiresBefore: base.Add(30 * time.Hour)}} {
		t.Run("Pages", func(t *testing.T) {
			var got []string
			f.Limit = 7
			for range 20 {
				page, err := s.ListCertificates(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, serialsOf(page)...)
				if len(page) < f.Limit {
					break
				}
				f.After = store.PositionOf(page[len(page)-1])
			}
			f.Limit, f.After = 1000, store.Position{}
			if want := model(certs, f); !slices.Equal(got, want) {
				t.Errorf("pages of 7 with %+v list %v\nwant %v", f, got, want)
			}
		})
	}
	t.Run("FullRecords", func(t *testing.T) {
		got, err := s.ListCertificates(ctx, store.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		bySerial := map[string]store.Certificate{}
		for _, c := range certs {
			bySerial[c.Serial] = c
		}
		for _, c := range got {
			if d := sameCert(c, bySerial[c.Serial]); d != "" {
				t.Errorf("listed %s: %s", c.Serial, d)
			}
		}
	})
}

func testFilterErrors(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	tests := []struct {
		name string
		f    store.Filter
	}{
		{"ActiveWithoutNow", store.Filter{Status: store.StatusActive}},
		{"ExpiredWithoutNow", store.Filter{Status: store.StatusExpired}},
		{"UnknownStatus", store.Filter{Status: "suspended"}},
		{"NegativeLimit", store.Filter{Limit: -1}},
		{"NegativeOffset", store.Filter{Offset: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.ListCertificates(ctx, tc.f); err == nil {
				t.Error("ListCertificates accepted the filter")
			}
			if tc.f.Limit == 0 && tc.f.Offset == 0 {
				if _, err := s.CountCertificates(ctx, tc.f); err == nil {
					t.Error("CountCertificates accepted the filter")
				}
			}
		})
	}
	if _, err := s.Events(ctx, store.EventFilter{Limit: -1}); err == nil {
		t.Error("Events accepted a negative limit")
	}
}

// testFilterLimits checks the default limit of 1000 and that a larger
// limit is honoured up to the cap.
func testFilterLimits(t *testing.T, open Opener) {
	s := openStore(t, open)
	ctx := context.Background()
	const n = 1005
	isss := make([]*store.Issuance, n)
	for i := range isss {
		isss[i] = NewIssuance(i)
	}
	for i, err := range recordAll(s, isss) {
		if err != nil {
			t.Fatalf("RecordIssuance %d: %v", i, err)
		}
	}
	tests := []struct {
		name  string
		limit int
		want  int
	}{
		{"Default", 0, 1000},
		{"Explicit", 1002, 1002},
		{"AboveCap", 1_000_000, n},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListCertificates(ctx, store.Filter{Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Errorf("ListCertificates(Limit %d) returned %d, want %d", tc.limit, len(got), tc.want)
			}
			evs, err := s.Events(ctx, store.EventFilter{Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != tc.want {
				t.Errorf("Events(Limit %d) returned %d, want %d", tc.limit, len(evs), tc.want)
			}
		})
	}
}
