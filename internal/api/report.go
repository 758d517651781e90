package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/store"
)

// defaultReportWindow is the expiry report's window when the request does
// not name one.
const defaultReportWindow = "30d"

func (s *server) reportRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/reports/expiring", s.authed(s.expiringReport))
}

// expiringReport answers GET /v1/reports/expiring?within=30d&profile=&limit=
// (admins).
func (s *server) expiringReport(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := r.URL.Query()
	within := q.Get("within")
	if within == "" {
		within = defaultReportWindow
	}
	d, err := duration.Parse(within)
	if err != nil || d <= 0 || len(within) > maxTTLLen {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("within %q is not a positive duration like 30d, 12h or 90m", within))
		return
	}
	profile := q.Get("profile")
	if len(profile) > 256 {
		writeProblem(w, http.StatusBadRequest, "field-too-long", "Field Too Long", "profile is longer than any this server accepts")
		return
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 || limit > maxListLimit {
			writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("limit %q must be a whole number from 0 to %d", v, maxListLimit))
			return
		}
	}
	rep, now, err := s.cfg.Authority.ExpiringReport(r.Context(), p, d, profile, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := expiringReport(rep, within, profile, now, d)
	// Discovered certificates have no profile: a report for one profile
	// leaves them out.
	if profile == "" {
		disc, err := s.cfg.Authority.DiscoveredExpiring(r.Context(), p, d, limit)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Discovered = discoveredExpiring(disc, now)
	}
	writeJSON(w, http.StatusOK, out)
}

func expiringReport(rep store.ExpiringReport, within, profile string, now time.Time, d time.Duration) client.ExpiringReport {
	out := client.ExpiringReport{Within: within, Profile: profile, GeneratedAt: now.UTC(), ExpiringBefore: now.Add(d).UTC(),
		Total: rep.Total, Listed: rep.Listed, Groups: make([]client.ExpiringGroup, 0, len(rep.Groups))}
	for _, g := range rep.Groups {
		cg := client.ExpiringGroup{Profile: g.Profile, Owner: g.Owner, Count: g.Count, EarliestExpiry: g.EarliestExpiry,
			Certificates: make([]client.Certificate, 0, len(g.Certificates))}
		for _, c := range g.Certificates {
			cg.Certificates = append(cg.Certificates, inventoryRecord(c, false))
		}
		out.Groups = append(out.Groups, cg)
	}
	return out
}
