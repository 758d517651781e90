package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// The expiry report as `mica report expiring` prints it: the certificates
// at risk (expiring within the window, nothing newer of their identity),
// grouped by profile and owner, and the discovered certificates that
// expire. The CSV download is the CLI's --output csv, written by the same
// code (client.ExpiringReport.WriteCSV).

// reportWindows are the windows offered; any duration is accepted.
var reportWindows = []string{"24h", "7d", "14d", "30d", "90d"}

// reportLimit is the most certificates the page lists; the groups' counts
// always cover all of them.
const reportLimit = 1000

type reportView struct {
	Report  client.ExpiringReport
	Within  string
	Profile string
	Windows []string
	Problem string
	CSV     string // the download's query
}

// expiring reads the report the query asks for.
func (c *Console) expiring(r *http.Request, s *session) (client.ExpiringReport, string, string, error) {
	within, err := bounded(r, "within", 16)
	if err != nil {
		return client.ExpiringReport{}, "", "", err
	}
	if within == "" {
		within = "30d"
	}
	profile, err := bounded(r, "profile", 256)
	if err != nil {
		return client.ExpiringReport{}, within, "", err
	}
	d, err := duration.Parse(within)
	if err != nil || d <= 0 {
		return client.ExpiringReport{}, within, profile, fmt.Errorf("within %q is not a window like 30d, 12h or 90m", within)
	}
	ctx := r.Context()
	rep, now, err := c.cfg.Authority.ExpiringReport(ctx, s.Principal, d, profile, reportLimit)
	if err != nil {
		return client.ExpiringReport{}, within, profile, err
	}
	var disc *store.DiscoveredReport
	if profile == "" {
		dr, err := c.cfg.Authority.DiscoveredExpiring(ctx, s.Principal, d, reportLimit)
		if err != nil {
			return client.ExpiringReport{}, within, profile, err
		}
		disc = &dr
	}
	return api.ExpiringReportBody(rep, disc, within, profile, now, d), within, profile, nil
}

func (c *Console) report(w http.ResponseWriter, r *http.Request, s *session) {
	rep, within, profile, err := c.expiring(r, s)
	v := reportView{Report: rep, Within: within, Profile: profile, Windows: reportWindows}
	if !slices.Contains(v.Windows, within) && within != "" {
		v.Windows = append(v.Windows, within)
	}
	var ae *authority.Error
	switch {
	case err == nil:
	case !errors.As(err, &ae):
		c.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	case ae.Kind == authority.KindInternal:
		c.refuse(w, r, s, err)
		return
	default:
		v.Problem = ae.Detail
	}
	q := url.Values{"within": {within}}
	if profile != "" {
		q.Set("profile", profile)
	}
	v.CSV = q.Encode()
	c.render(w, r, s, http.StatusOK, "report", "Expiry report", "report", v)
}

func (c *Console) reportCSV(w http.ResponseWriter, r *http.Request, s *session) {
	rep, within, _, err := c.expiring(r, s)
	if err != nil {
		if errors.As(err, new(*authority.Error)) {
			c.refuse(w, r, s, err)
		} else {
			c.fail(w, r, s, http.StatusBadRequest, err.Error())
		}
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="mica-expiring-%s-%s.csv"`, within, rep.GeneratedAt.Format("20060102T1504Z")))
	if err := rep.WriteCSV(w); err != nil {
		c.log.Warn("console: writing the expiry CSV failed", "error", err.Error())
	}
}
