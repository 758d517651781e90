// Package token mints and verifies mica's one-time enrollment tokens: signed
// JWTs (EdDSA over Ed25519) bound to one identity, one profile, an expiry and
// optionally a source network.
//
// Verification here checks only what the token itself proves (signature,
// audience, time, binding fields). Single use is enforced by the authority,
// which consumes the token's jti in the same transaction as the certificate
// it pays for.
package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Audience is the only audience mica's enrollment endpoint accepts, so a token
// minted for something else cannot be replayed here.
const Audience = "mica-enroll"

// MaxLifetime bounds how long a token may live: a bootstrap secret that
// outlives a working day is a standing credential, not a one-time token.
const MaxLifetime = 24 * time.Hour

// maxTokenBytes bounds what is parsed at all; real tokens are well under 1 KiB.
const maxTokenBytes = 4096

// Claims are what a token says.
type Claims struct {
	ID        string // jti: random, recorded on use so the token works once
	Identity  string // the identity (identity.Parse form) it may enroll
	Profile   string // the profile the certificate is issued under
	Issuer    string // the admin who made it
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
	Network   netip.Prefix // when valid, the request must come from inside it
	// RootFingerprint is the lower-case hex SHA-256 of the root certificate, so
	// a client holding only the token can pin the server's trust bundle.
	RootFingerprint string
}

// wire is the JSON form of the mica-specific claims.
type wire struct {
	jwt.Claims
	Profile string `json:"profile"`
	Network string `json:"cidr,omitempty"`
	RootFP  string `json:"root_fp,omitempty"`
}

// Minter signs tokens.
type Minter struct {
	signer jose.Signer
}

// NewMinter makes a Minter that signs with key.
func NewMinter(key ed25519.PrivateKey) (*Minter, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", KeyID(key.Public().(ed25519.PublicKey)))
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("token: cannot make signer: %w", err)
	}
	return &Minter{signer: s}, nil
}

// NewID returns a fresh token ID: the time in microseconds, then 128 random
// bits. The randomness makes it unguessable; the time prefix makes IDs grow,
// so the used-tokens index is appended to rather than written at random.
func NewID() string {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMicro()))
	if _, err := rand.Read(b[8:]); err != nil {
		panic("token: system randomness failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// Mint signs c. ID, IssuedAt and NotBefore are filled in when empty.
func (m *Minter) Mint(c Claims) (string, error) {
	if c.Identity == "" || c.Profile == "" {
		return "", errors.New("token: identity and profile are required")
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt
	}
	if life := c.Expiry.Sub(c.IssuedAt); life <= 0 || life > MaxLifetime {
		return "", fmt.Errorf("token: lifetime %s is out of range: choose a TTL between 1s and %s", life, MaxLifetime)
	}
	w := wire{
		Claims: jwt.Claims{
			ID:        c.ID,
			Subject:   c.Identity,
			Issuer:    c.Issuer,
			Audience:  jwt.Audience{Audience},
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			NotBefore: jwt.NewNumericDate(c.NotBefore),
			Expiry:    jwt.NewNumericDate(c.Expiry),
		},
		Profile: c.Profile,
		RootFP:  c.RootFingerprint,
	}
	if c.Network.IsValid() {
		w.Network = c.Network.String()
	}
	return jwt.Signed(m.signer).Claims(w).Serialize()
}

// Error kinds returned by Verify; callers branch with errors.Is.
var (
	ErrMalformed = errors.New("token: malformed or not signed by this server")
	ErrExpired   = errors.New("token: expired")
	ErrNotYet    = errors.New("token: not valid yet")
)

// Verifier checks tokens against the server's token keys.
type Verifier struct {
	keys   map[string]ed25519.PublicKey // by kid
	leeway time.Duration
}

// NewVerifier accepts tokens signed by any of keys (more than one while a
// token key is being rotated).
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys)), leeway: 30 * time.Second}
	for _, k := range keys {
		v.keys[KeyID(k)] = k
	}
	return v
}

// header is a token's JOSE header as mica writes it.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// Verify checks the signature, audience and validity window at now and
// returns the claims. It does not check single use.
//
// The token is read here rather than by go-jose, which mints it: a token
// is one compact JWS that mica itself made (RFC 7515 7.1) with exactly
// the header above, so checking it takes splitting three base64url parts,
// one Ed25519 verification and decoding two small JSON objects, where the
// general parser cost as much again as the signature.
func (v *Verifier) Verify(raw string, now time.Time) (Claims, error) {
	if len(raw) > maxTokenBytes {
		return Claims{}, fmt.Errorf("%w: %d bytes is longer than any token this server makes", ErrMalformed, len(raw))
	}
	h64, rest, ok1 := strings.Cut(raw, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return Claims{}, fmt.Errorf("%w: not a compact JWS of three parts", ErrMalformed)
	}
	var hdr header
	if err := decodePart(h64, &hdr, true); err != nil {
		return Claims{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if hdr.Alg != string(jose.EdDSA) || (hdr.Typ != "" && hdr.Typ != "JWT") {
		return Claims{}, fmt.Errorf("%w: algorithm %q, type %q: want EdDSA and JWT", ErrMalformed, hdr.Alg, hdr.Typ)
	}
	key, ok := v.keys[hdr.Kid]
	if !ok {
		return Claims{}, fmt.Errorf("%w: unknown signing key %q", ErrMalformed, hdr.Kid)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(key, []byte(raw[:len(h64)+1+len(p64)]), sig) {
		return Claims{}, fmt.Errorf("%w: the signature does not verify", ErrMalformed)
	}
	var w wire
	if err := decodePart(p64, &w, false); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if w.ID == "" || w.Subject == "" || w.Profile == "" || w.Expiry == nil {
		return Claims{}, fmt.Errorf("%w: missing jti, sub, profile or exp", ErrMalformed)
	}
	err = w.Claims.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{Audience}, Time: now}, v.leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return Claims{}, fmt.Errorf("%w %s ago: ask an admin for a new one with `mica token create`", ErrExpired, now.Sub(w.Expiry.Time()).Round(time.Second))
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Claims{}, fmt.Errorf("%w: check this machine's clock", ErrNotYet)
	case err != nil:
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c := Claims{
		ID:              w.ID,
		Identity:        w.Subject,
		Profile:         w.Profile,
		Issuer:          w.Issuer,
		Expiry:          w.Expiry.Time(),
		RootFingerprint: w.RootFP,
	}
	if w.IssuedAt != nil {
		c.IssuedAt = w.IssuedAt.Time()
	}
	if w.NotBefore != nil {
		c.NotBefore = w.NotBefore.Time()
	}
	if w.Network != "" {
		if c.Network, err = netip.ParsePrefix(w.Network); err != nil {
			return Claims{}, fmt.Errorf("%w: bad cidr claim", ErrMalformed)
		}
	}
	return c, nil
}

// decodePart decodes one base64url part of a JWS as one JSON object; the
// header (strict) may carry no field but alg, kid and typ, so that
// nothing a verifier would have to act on (crit, b64) can hide in it.
func decodePart(part string, v any, strict bool) error {
	data, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	if !strict {
		return json.Unmarshal(data, v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// Inspect reads a token's claims WITHOUT checking its signature. Clients use
// it only to learn which root to pin before they talk to the server; the
// server never trusts its result.
func Inspect(raw string) (Claims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var w wire
	if err := tok.UnsafeClaimsWithoutVerification(&w); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c := Claims{ID: w.ID, Identity: w.Subject, Profile: w.Profile, RootFingerprint: w.RootFP}
	if w.Expiry != nil {
		c.Expiry = w.Expiry.Time()
	}
	return c, nil
}

// KeyID names a token key: the first 16 bytes of the SHA-256 of the public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}
