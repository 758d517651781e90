package crl

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// StaticHandler serves a CRL signed elsewhere — the root's, signed at the
// root ceremony with `mica ca root-crl` — from the file at path. The file
// is re-read when it changes, so copying a new one in place publishes it
// without a restart; one that does not parse or is not signed by issuer is
// never served (the last good one stays). A missing file is a 404 that
// says how to make it.
func StaticHandler(path string, issuer *x509.Certificate) http.Handler {
	s := &staticCRL{path: path, issuer: issuer}
	return http.HandlerFunc(s.serve)
}

type staticCRL struct {
	path   string
	issuer *x509.Certificate

	mu      sync.Mutex
	modTime time.Time
	size    int64
	der     []byte
	etag    string
}

func (s *staticCRL) serve(w http.ResponseWriter, r *http.Request) {
	der, etag, modTime, err := s.load()
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "public, max-age=300")
	http.ServeContent(w, r, "", modTime, bytes.NewReader(der))
}

// load returns the current file's CRL, reading it again only when its
// modification time or size changed.
func (s *staticCRL) load() ([]byte, string, time.Time, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("crl: no CRL for %s is published here yet: sign one with `mica ca root-crl` and copy it to %s", s.issuer.Subject.CommonName, s.path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.der != nil && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return s.der, s.etag, s.modTime, nil
	}
	der, err := os.ReadFile(s.path)
	if err == nil {
		err = checkSignedBy(der, s.issuer)
	}
	if err != nil {
		if s.der != nil {
			return s.der, s.etag, s.modTime, nil // keep serving the last good one
		}
		return nil, "", time.Time{}, err
	}
	s.der, s.modTime, s.size, s.etag = der, fi.ModTime(), fi.Size(), etagOf(der)
	return s.der, s.etag, s.modTime, nil
}

func checkSignedBy(der []byte, issuer *x509.Certificate) error {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("crl: the published CRL file does not parse: %w", err)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("crl: the published CRL file is not signed by %s: %w", issuer.Subject.CommonName, err)
	}
	return nil
}

// etagOf names a CRL file by its CRL number, as the built CRLs are named.
func etagOf(der []byte) string {
	rl, err := x509.ParseRevocationList(der)
	if err != nil || rl.Number == nil {
		return ""
	}
	return `"` + rl.Number.Text(16) + `"`
}
