package api_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
)

func TestJWTSVIDEndpoints(t *testing.T) {
	f := authoritytest.New(t)
	_, anon, admin := serve(t, f)
	ctx := context.Background()
	tests := []struct {
		name string
		c    *client.Client
		req  client.JWTSVIDRequest
		slug string // "" for success
	}{
		{"holder gets its own", admin, client.JWTSVIDRequest{Audience: []string{"db"}, TTL: "2m"}, ""},
		{"anonymous refused", anon, client.JWTSVIDRequest{Audience: []string{"db"}}, "unauthenticated"},
		{"audience required", admin, client.JWTSVIDRequest{}, "invalid-request"},
		{"too long", admin, client.JWTSVIDRequest{Audience: []string{"db"}, TTL: "2h"}, "invalid-request"},
		{"bad ttl", admin, client.JWTSVIDRequest{Audience: []string{"db"}, TTL: "soon"}, "invalid-request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.JWTSVID(ctx, tt.req)
			if tt.slug != "" {
				if problemSlug(err) != tt.slug {
					t.Fatalf("err = %v, want %s", err, tt.slug)
				}
				return
			}
			if err != nil || got.SPIFFEID != authoritytest.AdminID || got.Token == "" {
				t.Fatalf("JWTSVID = %+v, %v", got, err)
			}
		})
	}
	raw, err := anon.JWTBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0].Kid == "" || jwks.Keys[0].Use != "jwt-svid" {
		t.Errorf("jwt bundle = %s, %v", raw, err)
	}
}
