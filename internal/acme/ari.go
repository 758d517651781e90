package acme

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/renewal"
	"github.com/mica-pki/mica/internal/store"
)

// serialFromCertID reads the serial out of an RFC 9773 certificate ID
// (base64url(AKI keyIdentifier) "." base64url(serial DER)); "" when it is
// not one.
func serialFromCertID(id string) string {
	_, ser, ok := strings.Cut(id, ".")
	if !ok {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(ser)
	if err != nil || len(b) == 0 {
		return ""
	}
	return new(big.Int).SetBytes(b).Text(16)
}

// renewalInfo answers ACME Renewal Information (RFC 9773): renew in the
// window of mica's one renewal schedule (package renewal), where mica's own
// agent renews; at once when the certificate is revoked.
func (s *Server) renewalInfo(w http.ResponseWriter, r *http.Request) {
	serial := serialFromCertID(r.PathValue("id"))
	if serial == "" {
		writeProblem(w, malformed("%q is not an RFC 9773 certificate ID (base64url AKI \".\" base64url serial)", r.PathValue("id")))
		return
	}
	rec, err := s.store.Certificate(r.Context(), serial)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, newProblem(errMalformed, http.StatusNotFound, "no certificate with serial %s", serial))
		return
	}
	if err != nil {
		writeProblem(w, internal(err))
		return
	}
	start, end := renewal.Window(rec.NotBefore, rec.NotAfter)
	if rec.Status == store.StatusRevoked {
		now := s.now().UTC()
		start, end = now.Add(-time.Hour), now
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "3600")
	json.NewEncoder(w).Encode(map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
}
