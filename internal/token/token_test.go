package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func newPair(t *testing.T) (*Minter, *Verifier, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMinter(priv)
	if err != nil {
		t.Fatal(err)
	}
	return m, NewVerifier(pub), priv
}

func TestRoundTrip(t *testing.T) {
	m, v, _ := newPair(t)
	now := time.Unix(1_800_000_000, 0)
	raw, err := m.Mint(Claims{
		Identity: "spiffe://example.org/billing/api", Profile: "service", Issuer: "admin",
		IssuedAt: now, Expiry: now.Add(10 * time.Minute),
		Network: netip.MustParsePrefix("10.0.0.0/8"), RootFingerprint: "abcd",
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(raw, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity != "spiffe://example.org/billing/api" || c.Profile != "service" || c.Issuer != "admin" ||
		c.Network.String() != "10.0.0.0/8" || c.RootFingerprint != "abcd" || len(c.ID) != 48 || !c.Expiry.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("claims did not round-trip: %+v", c)
	}
	ins, err := Inspect(raw)
	if err != nil || ins.ID != c.ID || ins.RootFingerprint != "abcd" {
		t.Fatalf("Inspect = %+v, %v", ins, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	m, v, priv := newPair(t)
	other, _, _ := newPair(t)
	now := time.Unix(1_800_000_000, 0)
	good := Claims{Identity: "spiffe://example.org/x", Profile: "service", IssuedAt: now, Expiry: now.Add(10 * time.Minute)}
	mint := func(m *Minter, c Claims) string {
		raw, err := m.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	valid := mint(m, good)
	parts := strings.Split(valid, ".")
	// signed is a compact JWS with this header and valid's claims, signed
	// with m's key.
	kid := KeyID(priv.Public().(ed25519.PublicKey))
	signed := func(hdr string) string {
		in := base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "." + parts[1]
		return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(in)))
	}
	if _, err := v.Verify(signed(`{"alg":"EdDSA","kid":"`+kid+`","typ":"JWT"}`), now); err != nil {
		t.Fatalf("a token signed by hand as the minter signs it: %v", err)
	}
	tests := []struct {
		name string
		raw  string
		at   time.Time
		want error
	}{
		{"expired", valid, now.Add(11 * time.Minute), ErrExpired},
		{"not yet valid", valid, now.Add(-5 * time.Minute), ErrNotYet},
		{"other key", mint(other, good), now, ErrMalformed},
		{"garbage", "not-a-token", now, ErrMalformed},
		{"tampered payload", parts[0] + "." + parts[1] + "x." + parts[2], now, ErrMalformed},
		{"no signature", parts[0] + "." + parts[1] + ".", now, ErrMalformed},
		{"oversized", strings.Repeat("a", maxTokenBytes+1), now, ErrMalformed},
		{"four parts", valid + ".x", now, ErrMalformed},
		{"signature of other claims", parts[0] + "." + parts[1] + "." + strings.Split(mint(m, good), ".")[2], now, ErrMalformed},
		{"critical header", signed(`{"alg":"EdDSA","kid":"` + kid + `","typ":"JWT","crit":["exp"]}`), now, ErrMalformed},
		{"another algorithm named", signed(`{"alg":"ES256","kid":"` + kid + `","typ":"JWT"}`), now, ErrMalformed},
		{"another type", signed(`{"alg":"EdDSA","kid":"` + kid + `","typ":"JOSE+JSON"}`), now, ErrMalformed},
		{"unknown key id", signed(`{"alg":"EdDSA","kid":"nope","typ":"JWT"}`), now, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(tt.raw, tt.at)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMintRefusesLongLifetime(t *testing.T) {
	m, _, _ := newPair(t)
	now := time.Now()
	if _, err := m.Mint(Claims{Identity: "x.example", Profile: "p", IssuedAt: now, Expiry: now.Add(MaxLifetime + time.Second)}); err == nil {
		t.Fatal("Mint accepted a token longer-lived than MaxLifetime")
	}
}

func FuzzVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	m, _ := NewMinter(priv)
	now := time.Unix(1_800_000_000, 0)
	raw, _ := m.Mint(Claims{Identity: "a.example", Profile: "p", IssuedAt: now, Expiry: now.Add(time.Minute)})
	f.Add(raw)
	f.Add("e30.e30.")
	v := NewVerifier(pub)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s, now)
		if err == nil && (c.ID == "" || c.Identity == "") {
			t.Fatalf("accepted token without jti or identity: %q", s)
		}
	})
}
