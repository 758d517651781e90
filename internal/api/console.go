package api

import (
	"net/http"
	"net/url"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// ConsoleSignInPath is where a console sign-in link points, under the
// server's URL; the web console (internal/web) serves it.
const ConsoleSignInPath = "/ui/signin"

func (s *server) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/console/links", s.authed(s.consoleLink))
}

// consoleLink answers POST /v1/console/links (any administrator) with a
// one-time sign-in link for the caller's own credential.
func (s *server) consoleLink(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req struct{}
	if !decode(w, r, &req) {
		return
	}
	l, err := s.cfg.Authority.CreateConsoleLink(r.Context(), p, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, client.ConsoleLink{Path: ConsoleSignInPath + "?link=" + url.QueryEscape(l.Secret),
		Identity: l.Identity, ExpiresAt: l.ExpiresAt.UTC()})
}

// ExpiringReportBody is the expiry report as GET /v1/reports/expiring
// answers it, for another door that shows the same report (the console's
// page and CSV): rep over within (its text, like "30d", and d) from now,
// for profile, with the discovered certificates when disc is not nil.
func ExpiringReportBody(rep store.ExpiringReport, disc *store.DiscoveredReport, within, profile string, now time.Time, d time.Duration) client.ExpiringReport {
	out := expiringReport(rep, within, profile, now, d)
	if disc != nil {
		out.Discovered = discoveredExpiring(*disc, now)
	}
	return out
}
