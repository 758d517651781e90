package client_test

import (
	"context"
	"slices"
	"testing"

	"github.com/mica-pki/mica/client"
)

// The SDK walks the inventory by the server's cursor: every record once,
// in order, however the pages fall; a limit stops it where it says; the
// caller may stop early; a refused page ends the walk with its problem.
func TestListPages(t *testing.T) {
	s := serve(t, nil)
	ctx := context.Background()
	for range 4 {
		s.f.Issue(t, "spiffe://example.org/billing/listed")
	}
	one, err := s.admin.ListCertificatesPage(ctx, client.ListFilter{Limit: 10000})
	if err != nil || one.Next != "" || len(one.Certificates) < 7 {
		t.Fatalf("one page of everything: %d records, next %q, %v", len(one.Certificates), one.Next, err)
	}
	var want []string
	for _, c := range one.Certificates {
		want = append(want, c.Serial)
	}
	serials := func(cs []client.Certificate) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Serial)
		}
		return out
	}
	for _, size := range []int{1, 2, 3, len(want), 0} {
		got, err := s.admin.ListCertificates(ctx, client.ListFilter{PageSize: size})
		if err != nil || !slices.Equal(serials(got), want) {
			t.Errorf("pages of %d: %v, %v; want %v", size, serials(got), err, want)
		}
	}
	got, err := s.admin.ListCertificates(ctx, client.ListFilter{PageSize: 2, Limit: 5})
	if err != nil || !slices.Equal(serials(got), want[:5]) {
		t.Errorf("limit 5 in pages of 2: %v, %v", serials(got), err)
	}
	// A page of 3, then the rest from its cursor.
	page, err := s.admin.ListCertificatesPage(ctx, client.ListFilter{Limit: 3})
	if err != nil || page.Next == "" || !slices.Equal(serials(page.Certificates), want[:3]) {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	rest, err := s.admin.ListCertificates(ctx, client.ListFilter{Cursor: page.Next, PageSize: 2})
	if err != nil || !slices.Equal(serials(rest), want[3:]) {
		t.Errorf("from the cursor: %v, %v; want %v", serials(rest), err, want[3:])
	}
	// Stopping early.
	n := 0
	for _, err := range s.admin.Certificates(ctx, client.ListFilter{PageSize: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 2 {
			break
		}
	}
	// A cursor with another filter: the walk yields the refusal.
	var walkErr error
	for _, err := range s.admin.Certificates(ctx, client.ListFilter{Cursor: page.Next, Profile: "service"}) {
		walkErr = err
	}
	if slug(walkErr) != "invalid-cursor" {
		t.Errorf("a cursor with another filter: %v, want invalid-cursor", walkErr)
	}
}
