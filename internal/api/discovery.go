package api

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// MaxReportBytes bounds a discovery report: MaxReportSightings chains of a
// few certificates each, base64-encoded.
const MaxReportBytes = 16 << 20

// WebhookEndpoint is what the API says of a configured webhook endpoint
// next to its delivery state: never its secret, nor its URL's query.
type WebhookEndpoint struct {
	Name, URL string
	Types     []string
}

func (s *server) discoveryRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/discovery/reports", s.authed(s.reportDiscovery))
	mux.HandleFunc("GET /v1/discovery/certificates", s.authed(s.discoveredCertificates))
	mux.HandleFunc("GET /v1/webhooks", s.authed(s.webhooks))
}

func (s *server) reportDiscovery(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	var req client.DiscoveryReport
	if !decodeLimit(w, r, &req, MaxReportBytes) {
		return
	}
	rep := authority.DiscoveryReport{ScanID: req.ScanID, Host: req.Host, HostNames: req.HostNames, Scanned: req.Scanned,
		Complete: req.Complete, Source: remoteAddr(r)}
	for _, sg := range req.Sightings {
		rep.Sightings = append(rep.Sightings, authority.ReportedSighting{Location: sg.Location, Chain: sg.Chain, Address: sg.Address,
			TLSVersion: sg.TLSVersion, Format: sg.Format, KeyPath: sg.KeyPath, KeyWorldReadable: sg.KeyWorldReadable})
	}
	sum, err := s.cfg.Authority.ReportDiscovery(r.Context(), p, rep)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.DiscoverySummary{Sightings: sum.Sightings, Certificates: sum.Certificates, New: sum.New,
		Gone: sum.Gone, SightingsGone: sum.SightingsGone, Findings: sum.Findings})
}

// discoveredCertificates answers GET /v1/discovery/certificates?class=&owner=
// &finding=&identity=&expiring_within=&include_gone=&sightings=&pem=&limit=&offset=.
func (s *server) discoveredCertificates(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := r.URL.Query()
	f := store.DiscoveryFilter{Class: q.Get("class"), Owner: q.Get("owner"), Finding: q.Get("finding"), Identity: q.Get("identity"),
		IncludeGone: q.Get("include_gone") == "true", WithSightings: q.Get("sightings") == "true"}
	switch f.Class {
	case "", "mica", "external", "self-signed":
	default:
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("class %q is not one of mica, external, self-signed", f.Class))
		return
	}
	if len(f.Owner) > maxNameLen || len(f.Identity) > maxNameLen || len(f.Finding) > 64 {
		writeProblem(w, http.StatusBadRequest, "field-too-long", "Field Too Long", "a filter is longer than any this server accepts")
		return
	}
	now := time.Now()
	expired := f.Finding == "expired"
	if expired {
		// Expiry is judged now, not stored.
		f.Finding, f.ExpiresBefore = "", now
	}
	if v := q.Get("expiring_within"); v != "" {
		d, err := duration.Parse(v)
		if err != nil || d <= 0 || len(v) > maxTTLLen {
			writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("expiring_within %q is not a positive duration like 7d or 36h", v))
			return
		}
		if !expired {
			f.ExpiresBefore = now.Add(d)
		}
	}
	for name, dst := range map[string]*int{"limit": &f.Limit, "offset": &f.Offset} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > maxListLimit && name == "limit" {
				writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("%s %q must be a whole number (limit at most %d)", name, v, maxListLimit))
				return
			}
			*dst = n
		}
	}
	if q.Get("pem") == "true" {
		f.WithSightings = true // the DER comes with the full read
	}
	certs, err := s.cfg.Authority.DiscoveredCertificates(r.Context(), p, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.DiscoveredList{Certificates: make([]client.DiscoveredCertificate, 0, len(certs))}
	for _, c := range certs {
		dc := discoveredRecord(c, now)
		if q.Get("sightings") != "true" {
			dc.Sightings = nil
		}
		if q.Get("pem") == "true" {
			dc.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}))
		}
		out.Certificates = append(out.Certificates, dc)
	}
	writeJSON(w, http.StatusOK, out)
}

// discoveredRecord shapes a discovered certificate, adding "expired" when
// it is at now.
func discoveredRecord(c store.DiscoveredCertificate, now time.Time) client.DiscoveredCertificate {
	out := client.DiscoveredCertificate{Fingerprint: c.Fingerprint, Serial: c.Serial, Subject: c.Subject, Issuer: c.Issuer, Identity: c.Identity,
		SANs: c.SANs, NotBefore: c.NotBefore, NotAfter: c.NotAfter, KeyType: c.KeyType, Class: c.Class, Findings: c.Findings, Owner: c.Owner,
		FirstSeen: c.FirstSeen, LastSeen: c.LastSeen, GoneAt: optionalTime(c.GoneAt)}
	switch {
	case now.After(c.NotAfter):
		out.Findings = append([]string{"expired"}, out.Findings...)
	case now.Before(c.NotBefore):
		out.Findings = append([]string{"not-yet-valid"}, out.Findings...)
	}
	if out.Findings == nil {
		out.Findings = []string{}
	}
	if out.SANs == nil {
		out.SANs = []string{}
	}
	for _, sg := range c.Sightings {
		f := sg.Findings
		if f == nil {
			f = []string{}
		}
		out.Sightings = append(out.Sightings, client.DiscoveredSighting{Location: sg.Location, Reporter: sg.Reporter, Findings: f,
			Detail: sg.Detail, FirstSeen: sg.FirstSeen, LastSeen: sg.LastSeen, GoneAt: optionalTime(sg.GoneAt)})
	}
	return out
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// discoveredExpiring shapes the discovered part of the expiry report.
func discoveredExpiring(rep store.DiscoveredReport, now time.Time) *client.DiscoveredExpiring {
	out := &client.DiscoveredExpiring{Total: rep.Total, Listed: rep.Listed, Groups: make([]client.DiscoveredGroup, 0, len(rep.Groups))}
	for _, g := range rep.Groups {
		cg := client.DiscoveredGroup{Class: g.Class, Owner: g.Owner, Count: g.Count, EarliestExpiry: g.EarliestExpiry,
			Certificates: make([]client.DiscoveredCertificate, 0, len(g.Certificates))}
		for _, c := range g.Certificates {
			cg.Certificates = append(cg.Certificates, discoveredRecord(c, now))
		}
		out.Groups = append(out.Groups, cg)
	}
	return out
}

// webhooks answers GET /v1/webhooks?dead_letters=N: each endpoint's
// delivery state, configured or remembered.
func (s *server) webhooks(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	dead := 10
	if v := r.URL.Query().Get("dead_letters"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000 {
			writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", fmt.Sprintf("dead_letters %q must be a whole number from 0 to 1000", v))
			return
		}
		dead = n
	}
	rep, err := s.cfg.Authority.WebhookStates(r.Context(), p, dead)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	states := map[string]store.WebhookState{}
	for _, st := range rep.States {
		states[st.Endpoint] = st
	}
	status := func(name string) client.WebhookStatus {
		ws := client.WebhookStatus{Name: name, LastSeq: rep.LastSeq}
		st, ok := states[name]
		if !ok {
			return ws // configured, not started yet
		}
		delete(states, name)
		ws.Cursor, ws.Lag = st.Cursor, max(0, rep.LastSeq-st.Cursor)
		ws.LastAttempt, ws.LastSuccess = optionalTime(st.LastAttempt), optionalTime(st.LastSuccess)
		ws.LastError, ws.Failures, ws.DeadLetters = st.LastError, st.Failures, st.DeadLetters
		for _, d := range rep.Dead[name] {
			ws.Dead = append(ws.Dead, client.DeadLetter{Seq: d.Seq, Attempts: d.Attempts, Status: d.Status, Error: d.Error, At: d.At})
		}
		return ws
	}
	out := client.WebhookList{Webhooks: []client.WebhookStatus{}}
	for _, ep := range s.cfg.Webhooks {
		ws := status(ep.Name)
		ws.URL, ws.Types, ws.Configured = ep.URL, ep.Types, true
		out.Webhooks = append(out.Webhooks, ws)
	}
	// Endpoints the database remembers that the config no longer names.
	for _, st := range rep.States {
		if _, left := states[st.Endpoint]; left {
			out.Webhooks = append(out.Webhooks, status(st.Endpoint))
		}
	}
	writeJSON(w, http.StatusOK, out)
}
