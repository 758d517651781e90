package authority_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
)

func TestMintJWTSVID(t *testing.T) {
	f := authoritytest.New(t)
	holder := f.Principal(t, f.Issue(t, "spiffe://example.org/billing/api"))
	jwks, err := json.Marshal(f.Authority.JWTBundle())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := jwtbundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), jwks)
	if err != nil {
		t.Fatalf("go-spiffe cannot read the JWT bundle: %v", err)
	}
	tests := []struct {
		name string
		req  authority.JWTSVIDRequest
		kind authority.Kind // KindInternal: no error expected
		ok   bool
	}{
		{"default lifetime", authority.JWTSVIDRequest{Audience: []string{"db"}}, 0, true},
		{"two audiences, short", authority.JWTSVIDRequest{Audience: []string{"db", "cache"}, TTL: time.Minute}, 0, true},
		{"no audience", authority.JWTSVIDRequest{}, authority.KindInvalid, false},
		{"empty audience", authority.JWTSVIDRequest{Audience: []string{""}}, authority.KindInvalid, false},
		{"too long", authority.JWTSVIDRequest{Audience: []string{"db"}, TTL: 2 * time.Hour}, authority.KindInvalid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.Authority.MintJWTSVID(context.Background(), holder, tt.req)
			if !tt.ok {
				if authority.KindOf(err) != tt.kind {
					t.Fatalf("err = %v, want kind %v", err, tt.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			svid, err := jwtsvid.ParseAndValidate(got.Token, bundle, tt.req.Audience[:1])
			if err != nil {
				t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
			}
			if svid.ID.String() != "spiffe://example.org/billing/api" {
				t.Errorf("subject %s, want the caller's own SPIFFE ID", svid.ID)
			}
			if d := time.Until(svid.Expiry); d > authority.DefaultJWTSVIDTTL+time.Second {
				t.Errorf("lifetime %s longer than asked", d)
			}
		})
	}
	t.Run("admin without a workload identity still speaks only for itself", func(t *testing.T) {
		got, err := f.Authority.MintJWTSVID(context.Background(), f.Admin, authority.JWTSVIDRequest{Audience: []string{"db"}})
		if err != nil {
			t.Fatal(err)
		}
		if got.SPIFFEID != authoritytest.AdminID {
			t.Errorf("subject %s, want %s", got.SPIFFEID, authoritytest.AdminID)
		}
	})
}
