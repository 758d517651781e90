package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/mica-pki/mica/internal/renewal"
	"github.com/mica-pki/mica/internal/store"
)

// Source reads a certificate's inventory record by serial (lower-case hex).
type Source interface {
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
}

// ResponderFunc has the issuing CA certify the responder's new key: a
// delegated responder certificate (id-kp-OCSPSigning, ocsp-nocheck) that
// never outlives the CA. authority.IssueOCSPResponder fits: it lints the
// certificate and records it in the inventory and the audit log, so the
// issuer's key is used only through package issuance.
type ResponderFunc func(ctx context.Context, pub crypto.PublicKey) (*x509.Certificate, error)

// Config wires a Responder for one issuing CA.
type Config struct {
	Source Source
	// Issuer is the CA the answers are about.
	Issuer *x509.Certificate
	// IssuerID is how the store names the issuer (its certificate's SHA-256
	// fingerprint, hex): certificates of other issuers are unknown here.
	IssuerID string
	// Responder certifies the responder's keys, for as long as the
	// authority's mica-ocsp profile says (renewed at two thirds). Required.
	Responder ResponderFunc
	// Validity is nextUpdate − thisUpdate of each response; default 1h.
	Validity time.Duration
	// Cache keeps the signed responses. The responders of every issuing
	// CA share one so that its bound is the server's; default: one of
	// DefaultCacheSize of its own.
	Cache  *Cache
	Clock  func() time.Time
	Logger *slog.Logger
}

// responderKey is the delegated signing identity.
type responderKey struct {
	signer  crypto.Signer
	cert    *x509.Certificate
	keyHash []byte // SHA-1 of the public key bits, the ResponderID byKey
	certs   []byte // responder certificate then the issuer, DER, for the response's certs field
}

type cached struct {
	der        []byte
	serial     string
	thisUpdate time.Time
	nextUpdate time.Time
	etag       string
}

// Responder answers OCSP requests for one issuer. Safe for concurrent use.
type Responder struct {
	cfg        Config
	nameHashes map[crypto.Hash][]byte
	keyHashes  map[crypto.Hash][]byte
	key        atomic.Pointer[responderKey]
	cache      *Cache
	// retired is set when Responders takes the responder out of its set:
	// a request still in flight then caches nothing, which no one would
	// re-sign.
	retired atomic.Bool
}

// New checks cfg, has the issuer sign a responder certificate and returns
// the Responder.
func New(cfg Config) (*Responder, error) {
	if cfg.Source == nil || cfg.Issuer == nil || cfg.Responder == nil || cfg.IssuerID == "" {
		return nil, errors.New("ocsp: Config needs Source, Issuer, Responder and IssuerID")
	}
	if cfg.Validity <= 0 {
		cfg.Validity = time.Hour
	}
	if cfg.Cache == nil {
		cfg.Cache = NewCache(DefaultCacheSize)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	spkBits, err := publicKeyBits(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	r := &Responder{cfg: cfg, nameHashes: map[crypto.Hash][]byte{}, keyHashes: map[crypto.Hash][]byte{}, cache: cfg.Cache}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		r.nameHashes[h], r.keyHashes[h] = hashOf(h, cfg.Issuer.RawSubject), hashOf(h, spkBits)
	}
	if err := r.renewResponder(); err != nil {
		return nil, err
	}
	return r, nil
}

// ResponderCertificate is the delegated responder certificate in use.
func (r *Responder) ResponderCertificate() *x509.Certificate { return r.key.Load().cert }

func publicKeyBits(c *x509.Certificate) ([]byte, error) {
	in := cryptobyte.String(c.RawSubjectPublicKeyInfo)
	var spki cryptobyte.String
	var bits asn1BitString
	if !in.ReadASN1(&spki, cbasn1.SEQUENCE) || !spki.SkipASN1(cbasn1.SEQUENCE) || !spki.ReadASN1BitString(&bits.BitString) {
		return nil, fmt.Errorf("ocsp: cannot read the public key of %q", c.Subject)
	}
	return bits.Bytes, nil
}

// renewResponder makes a new responder key, has the issuer certify it and
// re-signs every cached response with it.
func (r *Responder) renewResponder() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ocsp: generating the responder key: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cert, err := r.cfg.Responder(ctx, key.Public())
	if err != nil {
		return fmt.Errorf("ocsp: issuing the responder certificate: %w", err)
	}
	if err := cert.CheckSignatureFrom(r.cfg.Issuer); err != nil || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return fmt.Errorf("ocsp: the responder certificate is not an OCSP signing certificate of %q", r.cfg.Issuer.Subject.CommonName)
	}
	bits, err := publicKeyBits(cert)
	if err != nil {
		return err
	}
	kh := sha1.Sum(bits)
	k := &responderKey{signer: key, cert: cert, keyHash: kh[:], certs: append(bytes.Clone(cert.Raw), r.cfg.Issuer.Raw...)}
	r.key.Store(k)
	r.cfg.Logger.Info("ocsp responder certificate issued", "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
	r.resignAll(context.Background(), func(*cached) bool { return true })
	return nil
}

// Respond answers one DER-encoded OCSPRequest with a DER OCSPResponse.
func (r *Responder) Respond(ctx context.Context, der []byte) []byte {
	resp, _ := r.respond(ctx, der)
	return resp
}

// respond is Respond; the second result, when not nil, says the answer may
// be kept by HTTP caches (it has no nonce) and until when.
func (r *Responder) respond(ctx context.Context, der []byte) (resp []byte, c *cached) {
	req, err := parseRequest(der)
	if err != nil {
		return errorResponse(statusMalformedRequest), nil
	}
	if !r.matches(req) {
		// Not our issuer: RFC 6960 says unauthorized, unsigned.
		return errorResponse(statusUnauthorized), nil
	}
	return r.answer(ctx, req)
}

// matches reports whether req asks about a certificate of this issuer.
func (r *Responder) matches(req *request) bool {
	return bytes.Equal(req.nameHash, r.nameHashes[req.hash]) && bytes.Equal(req.keyHash, r.keyHashes[req.hash])
}

// answer is respond for a parsed request about this issuer.
func (r *Responder) answer(ctx context.Context, req *request) (resp []byte, c *cached) {
	now := r.cfg.Clock()
	if req.nonce == nil {
		// Fresh enough: at most three quarters of its validity gone. Run
		// re-signs at one half, so this is the path almost every request
		// takes.
		if c := r.cache.get(req.certID); c != nil && now.Before(c.nextUpdate.Add(-r.cfg.Validity/4)) {
			return c.der, c
		}
	}
	seen := r.cache.seen()
	serial := req.serial.Text(16)
	st, known, err := r.status(ctx, serial)
	if err != nil {
		r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "ocsp status lookup failed", slog.String("error", err.Error()))
		return errorResponse(statusTryLater), nil
	}
	entry, err := r.sign(req.certID, serial, st, req.nonce)
	if err != nil {
		r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "ocsp signing failed", slog.String("error", err.Error()))
		return errorResponse(statusInternalError), nil
	}
	if req.nonce != nil {
		return entry.der, nil
	}
	// Only certificates this CA issued are cached, so random serials
	// cannot fill the cache with answers of unknown.
	if known {
		r.cache.put(r, string(req.certID), entry, seen)
	}
	return entry.der, entry
}

func (r *Responder) status(ctx context.Context, serial string) (status, bool, error) {
	rec, err := r.cfg.Source.Certificate(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status{kind: 2}, false, nil
	case err != nil:
		return status{}, false, err
	case rec.Issuer != r.cfg.IssuerID:
		return status{kind: 2}, false, nil
	case rec.Status == store.StatusRevoked:
		return status{kind: 1, revokedAt: rec.RevokedAt, reason: rec.RevocationReason}, true, nil
	}
	return status{kind: 0}, true, nil
}

func (r *Responder) sign(certID []byte, serial string, st status, nonce []byte) (*cached, error) {
	now := r.cfg.Clock().UTC().Truncate(time.Second)
	next := now.Add(r.cfg.Validity)
	der, err := encodeResponse(r.key.Load(), certID, st, now, next, nonce)
	if err != nil {
		return nil, err
	}
	if nonce == nil {
		// It may be cached: keep it in an allocation of its own size,
		// not the encoder's, which has room to spare, so that the cache
		// can account for what it holds (sizeOf).
		der = bytes.Clone(der)
	}
	sum := sha256.Sum256(der)
	return &cached{der: der, serial: serial, thisUpdate: now, nextUpdate: next, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}, nil
}

// Changed re-signs the cached responses for serial (lower-case hex) from
// its current status: called when it is revoked, so that the next request
// is answered revoked, from the cache, at once. A response to a request
// that read the status before the revocation and is still being signed
// is not cached (Cache.put).
func (r *Responder) Changed(ctx context.Context, serial string) {
	for _, k := range r.cache.changed(r, serial) {
		r.resign(ctx, k, whatever, nil)
	}
}

// resignAll re-signs the cached responses that need says so about.
func (r *Responder) resignAll(ctx context.Context, need func(*cached) bool) {
	for _, k := range r.cache.keys(r, need) {
		r.resign(ctx, k, r.cache.seen(), need)
	}
}

// resign signs key's response again from its certificate's status now,
// if need (when not nil) still says so, and stores it if key is still
// cached and no change was announced after seen (Cache.refresh).
func (r *Responder) resign(ctx context.Context, key string, seen uint64, need func(*cached) bool) {
	c := r.cache.peek(r, key)
	if c == nil || (need != nil && !need(c)) {
		return
	}
	st, _, err := r.status(ctx, c.serial)
	if err != nil {
		r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "ocsp re-sign failed", slog.String("error", err.Error()))
		return
	}
	fresh, err := r.sign([]byte(key), c.serial, st, nil)
	if err != nil {
		r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "ocsp re-sign failed", slog.String("error", err.Error()))
		return
	}
	r.cache.refresh(r, key, fresh, seen)
}

// Run re-signs cached responses before half their validity has passed and
// renews the responder certificate at two thirds of its life, until ctx
// ends.
func (r *Responder) Run(ctx context.Context) error {
	tick := max(r.cfg.Validity/8, time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := r.cfg.Clock()
		cert := r.key.Load().cert
		if now.After(renewal.RenewAt(cert.NotBefore, cert.NotAfter, 0.5)) { // r=0.5: exactly two thirds; one responder has no fleet to spread
			if err := r.renewResponder(); err != nil {
				r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "renewing the ocsp responder certificate failed; retrying", slog.String("error", err.Error()))
			}
			continue
		}
		r.resignAll(ctx, func(c *cached) bool { return !now.Add(tick).Before(c.thisUpdate.Add(r.cfg.Validity / 2)) })
	}
}

// maxRequestBytes bounds a request; one CertID with a nonce is ~120 bytes.
const maxRequestBytes = 4096

// Handler serves RFC 6960 appendix A: POST with an application/ocsp-request
// body to the responder's URL, or GET with the base64 request appended to
// it. Responses without a nonce carry RFC 5019 caching headers.
func (r *Responder) Handler() http.Handler { return handler(r.respond, r.cfg.Clock) }

// handler serves respond's answers; clock dates the caching headers.
func handler(respond func(ctx context.Context, der []byte) ([]byte, *cached), clock func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var der []byte
		switch req.Method {
		case http.MethodPost:
			if ct := req.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/ocsp-request") {
				http.Error(w, "ocsp: send the request as application/ocsp-request", http.StatusUnsupportedMediaType)
				return
			}
			b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxRequestBytes))
			if err != nil {
				http.Error(w, "ocsp: request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			der = b
		case http.MethodGet, http.MethodHead:
			p := req.URL.EscapedPath()
			i := strings.LastIndex(p, "/ocsp/")
			if i < 0 {
				http.Error(w, "ocsp: GET needs the base64 request after /ocsp/", http.StatusBadRequest)
				return
			}
			enc, err := url.PathUnescape(p[i+len("/ocsp/"):])
			if err == nil {
				der, err = base64.StdEncoding.DecodeString(enc)
			}
			if err != nil || len(der) > maxRequestBytes {
				writeResponse(w, errorResponse(statusMalformedRequest), nil, time.Time{})
				return
			}
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "ocsp: use GET or POST", http.StatusMethodNotAllowed)
			return
		}
		resp, c := respond(req.Context(), der)
		if c != nil && req.Method != http.MethodPost && req.Header.Get("If-None-Match") == c.etag {
			w.Header().Set("ETag", c.etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		writeResponse(w, resp, c, clock())
	})
}

// writeResponse writes der; a cacheable response c gets caching headers
// for the time now.
func writeResponse(w http.ResponseWriter, der []byte, c *cached, now time.Time) {
	h := w.Header()
	h.Set("Content-Type", "application/ocsp-response")
	if c == nil {
		h.Set("Cache-Control", "no-store")
	} else {
		maxAge := max(int(c.nextUpdate.Sub(now).Seconds())/2, 0)
		h.Set("Cache-Control", "max-age="+strconv.Itoa(maxAge)+", public, no-transform, must-revalidate")
		h.Set("Last-Modified", c.thisUpdate.UTC().Format(http.TimeFormat))
		h.Set("Expires", c.nextUpdate.UTC().Format(http.TimeFormat))
		h.Set("ETag", c.etag)
	}
	h.Set("Content-Length", strconv.Itoa(len(der)))
	w.Write(der)
}

// CacheStats reads the cache the responder uses, which other responders
// may share (see Cache.Stats).
func (r *Responder) CacheStats() CacheStats { return r.cache.Stats() }
