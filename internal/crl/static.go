package crl

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// StaleHeader is set on a root CRL served past its nextUpdate, with the
// nextUpdate it passed (RFC 3339).
const StaleHeader = "Mica-CRL-Stale"

// Static serves a CRL signed elsewhere — the root's, signed at the root
// ceremony with `mica ca root-crl` — from the file at path. The file is
// re-read when it changes, so copying a new one in place publishes it
// without a restart; one that does not parse or is not signed by issuer is
// never served (the last good one stays). A missing file is a 404 that
// says how to make it.
//
// Past its nextUpdate the CRL is still served, because it is still the
// root's latest word and withholding it would let a relying party that
// treats "no CRL" as "nothing revoked" accept a withdrawn intermediate; but
// it is marked (StaleHeader, no caching), logged once per file, and
// Current lets metrics and alerts say that the ceremony is due.
type Static struct {
	path   string
	issuer *x509.Certificate
	now    func() time.Time
	log    *slog.Logger

	mu         sync.Mutex
	modTime    time.Time
	size       int64
	der        []byte
	etag       string
	this, next time.Time
	warned     bool // the stale file was logged
}

// StaticHandler returns the Static for the file at path, signed by issuer.
func StaticHandler(path string, issuer *x509.Certificate) *Static {
	return NewStatic(path, issuer, nil, nil)
}

// NewStatic is StaticHandler with a clock and a logger (either may be nil).
func NewStatic(path string, issuer *x509.Certificate, clock func() time.Time, log *slog.Logger) *Static {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Static{path: path, issuer: issuer, now: clock, log: log}
}

// ServeHTTP implements http.Handler.
func (s *Static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	der, etag, modTime, next, err := s.load()
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("ETag", etag)
	// Never let a cache hold it past its nextUpdate.
	if left := next.Sub(s.now()); left > 0 {
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(min(left, 5*time.Minute).Seconds())))
	} else {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set(StaleHeader, next.UTC().Format(time.RFC3339))
	}
	http.ServeContent(w, r, "", modTime, bytes.NewReader(der))
}

// Current is the published CRL's thisUpdate and nextUpdate; ok is false
// while none is published.
func (s *Static) Current() (thisUpdate, nextUpdate time.Time, ok bool) {
	if _, _, _, _, err := s.load(); err != nil {
		return time.Time{}, time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.this, s.next, true
}

// load returns the current file's CRL, reading it again only when its
// modification time or size changed.
func (s *Static) load() ([]byte, string, time.Time, time.Time, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, "", time.Time{}, time.Time{}, fmt.Errorf("crl: no CRL for %s is published here yet: sign one with `mica ca root-crl` and copy it to %s", s.issuer.Subject.CommonName, s.path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.der == nil || !fi.ModTime().Equal(s.modTime) || fi.Size() != s.size {
		der, err := os.ReadFile(s.path)
		var rl *x509.RevocationList
		if err == nil {
			rl, err = checkSignedBy(der, s.issuer)
		}
		if err != nil {
			if s.der == nil {
				return nil, "", time.Time{}, time.Time{}, err
			}
			// keep serving the last good one
		} else {
			s.der, s.modTime, s.size, s.etag = der, fi.ModTime(), fi.Size(), etagOf(rl)
			s.this, s.next, s.warned = rl.ThisUpdate, rl.NextUpdate, false
		}
	}
	if !s.warned && !s.now().Before(s.next) {
		s.warned = true
		s.log.Warn("crl: serving the root CRL past its nextUpdate: sign a new one with `mica ca root-crl` at the root ceremony",
			slog.String("path", s.path), slog.Time("next_update", s.next))
	}
	return s.der, s.etag, s.modTime, s.next, nil
}

func checkSignedBy(der []byte, issuer *x509.Certificate) (*x509.RevocationList, error) {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("crl: the published CRL file does not parse: %w", err)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("crl: the published CRL file is not signed by %s: %w", issuer.Subject.CommonName, err)
	}
	return rl, nil
}

// etagOf names a CRL file by its CRL number, as the built CRLs are named.
func etagOf(rl *x509.RevocationList) string {
	if rl.Number == nil {
		return ""
	}
	return `"` + rl.Number.Text(16) + `"`
}
