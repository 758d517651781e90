package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/store"
)

// This file is discovery and webhook status as the authority sees them:
// who may report and read discovered certificates, and how a report
// becomes inventory rows and lifecycle events.
//
// Who may report and read is answered by the authorize table
// (authorize.go), like every other action; one exception lives in
// Authority.Authorize: a workload whose certificate was issued under one
// of the config's discovery.agent_profiles (an agent on a host) may report.

// DiscoveryConfig configures discovery.
type DiscoveryConfig struct {
	// Roots are trust anchors besides mica's that chains of discovered
	// certificates should reach (the system's, the operator's); a chain
	// that reaches none is flagged missing-intermediate.
	Roots []*x509.Certificate
	// Owners map discovered certificates to who answers for them.
	Owners *discover.Owners
	// AgentProfiles are the profiles whose workload certificates may report
	// discoveries (agents on hosts).
	AgentProfiles []string
}

// discovery is the authority's discovery state, set by New.
type discovery struct {
	owners    *discover.Owners
	reporters map[string]bool
	roots     []*x509.Certificate // the operator's extra trust anchors
	now       func() time.Time
	// analyzer knows mica's CA certificates of one trust bundle; it is
	// made again when the CA rotates.
	mu       sync.Mutex
	trust    *Trust
	analyzer *discover.Analyzer
}

// analyzerFor is the analyzer for the trust bundle t.
func (d *discovery) analyzerFor(t *Trust) *discover.Analyzer {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.trust != t {
		mica := append(slices.Clone(t.Roots), t.Intermediates...)
		d.analyzer = discover.NewAnalyzer(discover.AnalyzerConfig{Roots: append(slices.Clone(t.Roots), d.roots...), Mica: mica, Clock: d.now})
		d.trust = t
	}
	return d.analyzer
}

func newDiscovery(a *Authority, cfg DiscoveryConfig) *discovery {
	d := &discovery{owners: cfg.Owners, reporters: map[string]bool{}, roots: cfg.Roots, now: a.now}
	for _, p := range cfg.AgentProfiles {
		d.reporters[p] = true
	}
	return d
}

// DiscoveryReport is what a scanner reports: the certificates it saw, and
// what its scan covered (so that what it no longer sees is recorded as
// gone).
type DiscoveryReport struct {
	// ScanID names the scan; a scan reported in several parts uses one.
	ScanID string
	// Host and HostNames are the reporter's host, for file sightings:
	// a mica certificate in a file on a host it does not name is flagged.
	Host      string
	HostNames []string
	Sightings []ReportedSighting
	// Scanned are endpoint locations the scan reached: a certificate seen
	// there before and not now is gone.
	Scanned []string
	// Complete are directory locations (file://host/dir) the scan
	// finished: what it did not see under them is gone.
	Complete []string
	Source   netip.Addr
}

// ReportedSighting is one certificate chain as a scanner saw it.
type ReportedSighting struct {
	Location string
	// Chain is DER, leaf first, as presented or as stored.
	Chain [][]byte
	// Address is the endpoint's address the scanner connected to.
	Address    string
	TLSVersion uint16
	// Format is how a file stored it: pem, der, pkcs12, jks.
	Format string
	// KeyPath is the private key file that matches the leaf, if found,
	// and KeyWorldReadable whether every local user can read it.
	KeyPath          string
	KeyWorldReadable bool
}

// DiscoverySummary is what a report changed.
type DiscoverySummary struct {
	Sightings, Certificates int
	// New certificates were never seen before; Gone ones are no longer
	// seen anywhere; SightingsGone counts places that stopped showing one.
	New, Gone, SightingsGone int
	// Findings counts the sightings with each finding.
	Findings map[string]int
}

// Bounds on one report: a scanner sends large scans in parts.
const (
	MaxReportSightings = 1000
	maxReportChain     = 10
	maxReportScopes    = 10000
	maxReportHostNames = 64
	maxScanIDLen       = 64
	maxDetailLen       = 2048
)

// ReportDiscovery records what a scan saw: each certificate judged
// (package discover), its sightings, the sightings the scan ended, and a
// cert.discovered or cert.disappeared event for each certificate that
// appeared or went. Events are written after the rows (each row notes
// its event once written), so a crash in between delivers the event
// later rather than never (see FlushDiscoveryEvents).
func (a *Authority) ReportDiscovery(ctx context.Context, p Principal, r DiscoveryReport) (DiscoverySummary, error) {
	if err := a.Authorize(p, ActDiscoveryReport, Resource{}); err != nil {
		return DiscoverySummary{}, err
	}
	ds, ok := a.store.(store.DiscoveryStore)
	if !ok {
		return DiscoverySummary{}, newError(KindInternal, nil, "this store keeps no discovered certificates")
	}
	batch, sum, err := a.judgeReport(ctx, p, r)
	if err != nil {
		return sum, err
	}
	res, err := ds.RecordDiscovery(ctx, batch)
	if err != nil {
		return sum, newError(KindInternal, err, "could not record the report; nothing was recorded: %v", err)
	}
	sum.New, sum.Gone, sum.SightingsGone = len(res.New), len(res.Gone), res.SightingsGone
	where := map[string]string{}
	for _, sg := range batch.Sightings {
		if where[sg.Fingerprint] == "" {
			where[sg.Fingerprint] = sg.Location
		}
	}
	if err := a.discoveryEvents(ctx, ds, p.Name, addrString(r.Source), res.New, res.Gone, where); err != nil {
		return sum, err
	}
	return sum, nil
}

// judgeReport checks a report and turns it into a store batch.
func (a *Authority) judgeReport(ctx context.Context, p Principal, r DiscoveryReport) (store.DiscoveryBatch, DiscoverySummary, error) {
	sum := DiscoverySummary{Findings: map[string]int{}}
	switch {
	case len(r.Sightings) > MaxReportSightings:
		return store.DiscoveryBatch{}, sum, newError(KindInvalid, nil, "a report holds at most %d sightings, not %d: send the scan in parts", MaxReportSightings, len(r.Sightings))
	case len(r.Scanned)+len(r.Complete) > maxReportScopes || len(r.HostNames) > maxReportHostNames:
		return store.DiscoveryBatch{}, sum, newError(KindInvalid, nil, "a report covers at most %d locations and names at most %d host names: send the scan in parts", maxReportScopes, maxReportHostNames)
	case len(r.ScanID) > maxScanIDLen || strings.Trim(r.ScanID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "":
		return store.DiscoveryBatch{}, sum, newError(KindInvalid, nil, "scan id %q must be at most %d letters, digits, '-', '_' or '.'", r.ScanID, maxScanIDLen)
	}
	var hostNames []identity.Name
	for _, h := range append([]string{r.Host}, r.HostNames...) {
		if h == "" {
			continue
		}
		n, err := identity.ParseName(h)
		if err != nil || n.Kind() == identity.KindSPIFFE {
			return store.DiscoveryBatch{}, sum, newError(KindInvalid, err, "host name %q is not a DNS name or an IP address", h)
		}
		hostNames = append(hostNames, n)
	}
	for _, scope := range []struct {
		list     []string
		endpoint bool
	}{{r.Scanned, true}, {r.Complete, false}} {
		for _, l := range scope.list {
			loc, err := discover.ParseLocation(l)
			if err != nil {
				return store.DiscoveryBatch{}, sum, newError(KindInvalid, err, "%v", err)
			}
			if loc.Scheme.Endpoint() != scope.endpoint || loc.Entry != "" {
				return store.DiscoveryBatch{}, sum, newError(KindInvalid, nil, "%s: scanned locations are endpoints, complete ones directories (file://host/dir)", l)
			}
		}
	}
	now := a.now()
	batch := store.DiscoveryBatch{Reporter: p.Name, ScanID: r.ScanID, At: now, Scanned: r.Scanned, Complete: r.Complete}
	certs := map[string]int{} // fingerprint → index in batch.Certificates
	for i, rs := range r.Sightings {
		s, err := a.parseSighting(rs, hostNames)
		if err != nil {
			return store.DiscoveryBatch{}, sum, newError(KindInvalid, err, "sighting %d: %v", i+1, err)
		}
		an, err := a.discovery.analyzerFor(a.issuers.Trust()).Analyze(s)
		if err != nil {
			return store.DiscoveryBatch{}, sum, newError(KindInvalid, err, "sighting %d: %v", i+1, err)
		}
		leaf := s.Chain[0]
		fp := Fingerprint(leaf.Raw)
		own := findingStrings(timeless(an.Certificate))
		owner := a.discovery.owners.Owner(s, an.Class)
		if an.Class == discover.ClassMica {
			found, recOwner := a.inventoryFindings(ctx, fp)
			own = append(own, found...)
			if owner == "" {
				owner = recOwner
			}
		}
		if idx, seen := certs[fp]; seen {
			if c := &batch.Certificates[idx]; c.Owner == "" {
				c.Owner = owner
			}
		} else {
			certs[fp] = len(batch.Certificates)
			batch.Certificates = append(batch.Certificates, store.DiscoveredCertificate{
				Fingerprint: fp, Serial: SerialHex(leaf), Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(),
				Identity: discover.DisplayName(leaf), SANs: discover.SANs(leaf), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
				KeyType: discover.KeyType(leaf.PublicKey), Class: string(an.Class), Findings: own, Owner: owner, DER: leaf.Raw,
			})
		}
		here := findingStrings(an.Here)
		batch.Sightings = append(batch.Sightings, store.Sighting{Fingerprint: fp, Location: s.Location.String(), Findings: here,
			Detail: sightingDetail(rs, an.Details)})
		for _, f := range append(findingStrings(an.Certificate), here...) {
			sum.Findings[f]++
		}
	}
	sum.Sightings, sum.Certificates = len(batch.Sightings), len(batch.Certificates)
	return batch, sum, nil
}

func (a *Authority) parseSighting(rs ReportedSighting, hostNames []identity.Name) (discover.Sighting, error) {
	loc, err := discover.ParseLocation(rs.Location)
	if err != nil {
		return discover.Sighting{}, err
	}
	if len(rs.Chain) == 0 || len(rs.Chain) > maxReportChain {
		return discover.Sighting{}, fmt.Errorf("a sighting carries 1 to %d certificates, leaf first", maxReportChain)
	}
	s := discover.Sighting{Location: loc, TLSVersion: rs.TLSVersion}
	for j, der := range rs.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return discover.Sighting{}, fmt.Errorf("certificate %d does not parse: %v", j+1, err)
		}
		s.Chain = append(s.Chain, c)
	}
	if rs.Address != "" {
		addr, err := netip.ParseAddr(rs.Address)
		if err != nil || !loc.Scheme.Endpoint() {
			return discover.Sighting{}, fmt.Errorf("address %q is not the IP address of an endpoint", rs.Address)
		}
		s.Addr = addr.Unmap()
	}
	if loc.Scheme == discover.SchemeFile {
		s.HostNames = hostNames
		if rs.KeyPath != "" {
			s.Key = &discover.Key{Path: rs.KeyPath, WorldReadable: rs.KeyWorldReadable}
		}
	}
	return s, nil
}

// inventoryFindings judges a certificate that chains to mica against the
// inventory (still deployed after its revocation, or never recorded) and
// returns its owner there, who answers for it unless a rule says otherwise.
func (a *Authority) inventoryFindings(ctx context.Context, fingerprint string) ([]string, string) {
	rec, err := a.store.CertificateByFingerprint(ctx, fingerprint)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return []string{string(discover.MicaNotInInventory)}, ""
	case err != nil:
		return nil, ""
	case rec.Status == store.StatusRevoked:
		return []string{string(discover.MicaRevoked)}, rec.Owner
	}
	return nil, rec.Owner
}

// timeless drops the findings that depend on when they are read (expired,
// not yet valid): the inventory judges them when it is read.
func timeless(fs []discover.Finding) []discover.Finding {
	return slices.DeleteFunc(slices.Clone(fs), func(f discover.Finding) bool { return f == discover.Expired || f == discover.NotYetValid })
}

func findingStrings(fs []discover.Finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

// sightingDetail says in one line what the scanner saw, for the inventory.
func sightingDetail(rs ReportedSighting, details []string) string {
	var parts []string
	if rs.Format != "" {
		parts = append(parts, rs.Format)
	}
	if rs.Address != "" {
		parts = append(parts, "at "+rs.Address)
	}
	if rs.TLSVersion != 0 {
		parts = append(parts, tlsVersionName(rs.TLSVersion))
	}
	if rs.KeyPath != "" {
		parts = append(parts, "key "+rs.KeyPath)
	}
	d := strings.Join(append(parts, details...), "; ")
	if len(d) > maxDetailLen {
		d = d[:maxDetailLen]
	}
	return d
}

func tlsVersionName(v uint16) string {
	switch v {
	case 0x0301:
		return "TLS 1.0"
	case 0x0302:
		return "TLS 1.1"
	case 0x0303:
		return "TLS 1.2"
	case 0x0304:
		return "TLS 1.3"
	}
	return fmt.Sprintf("TLS 0x%04x", v)
}

// discoveryEvents writes the events of certificates that appeared or
// went, and notes each on its row.
func (a *Authority) discoveryEvents(ctx context.Context, ds store.DiscoveryStore, actor, source string, newOnes, gone []store.DiscoveredCertificate, where map[string]string) error {
	for _, batch := range []struct {
		certs  []store.DiscoveredCertificate
		action store.Action
		kind   store.DiscoveryEventKind
	}{{newOnes, store.ActionCertDiscovered, store.DiscoveredEvent}, {gone, store.ActionCertDisappeared, store.DisappearedEvent}} {
		for _, c := range batch.certs {
			detail := fmt.Sprintf("%s certificate, expires %s", c.Class, c.NotAfter.UTC().Format(time.RFC3339))
			if l := where[c.Fingerprint]; l != "" && batch.kind == store.DiscoveredEvent {
				detail = "seen at " + l + "; " + detail
			} else if batch.kind == store.DisappearedEvent {
				detail = "no longer seen anywhere it was; " + detail
			}
			if len(c.Findings) > 0 {
				detail += "; findings: " + strings.Join(c.Findings, ", ")
			}
			if c.Owner != "" {
				detail += "; owner " + c.Owner
			}
			ev := store.Event{Time: a.now(), Actor: actor, Source: source, Action: batch.action, Serial: c.Serial, Fingerprint: c.Fingerprint,
				Identity: c.Identity, Outcome: "ok", Detail: detail}
			if err := a.store.RecordEvent(ctx, &ev); err != nil {
				return newError(KindInternal, err, "the report was recorded, but not its events; they are written at the next report or start: %v", err)
			}
			if err := ds.MarkDiscoveryEvent(ctx, c.Fingerprint, batch.kind, ev.Seq); err != nil {
				return newError(KindInternal, err, "could not note event %d: %v", ev.Seq, err)
			}
		}
	}
	return nil
}

// FlushDiscoveryEvents writes the events of discovered certificates whose
// report was recorded but whose event was not (a crash in between). The
// server runs it at start; it returns how many it wrote.
func (a *Authority) FlushDiscoveryEvents(ctx context.Context) (int, error) {
	ds, ok := a.store.(store.DiscoveryStore)
	if !ok {
		return 0, nil
	}
	newOnes, gone, err := ds.PendingDiscoveryEvents(ctx, 0)
	if err != nil {
		return 0, fmt.Errorf("authority: pending discovery events: %w", err)
	}
	if err := a.discoveryEvents(ctx, ds, SystemPrincipal, "", newOnes, gone, nil); err != nil {
		return 0, err
	}
	return len(newOnes) + len(gone), nil
}

// DiscoveredCertificates lists discovered certificates (auditors and up).
func (a *Authority) DiscoveredCertificates(ctx context.Context, p Principal, f store.DiscoveryFilter) ([]store.DiscoveredCertificate, error) {
	if err := a.Authorize(p, ActDiscoveryRead, Resource{}); err != nil {
		return nil, err
	}
	ds, ok := a.store.(store.DiscoveryStore)
	if !ok {
		return nil, newError(KindInternal, nil, "this store keeps no discovered certificates")
	}
	if f.Finding != "" && !slices.Contains(discover.Findings(), discover.Finding(f.Finding)) {
		return nil, newError(KindInvalid, nil, "finding %q is not one of %s", f.Finding, findingList())
	}
	out, err := ds.DiscoveredCertificates(ctx, f)
	if err != nil {
		return nil, newError(KindInternal, err, "could not read discovered certificates: %v", err)
	}
	return out, nil
}

func findingList() string {
	var s []string
	for _, f := range discover.Findings() {
		s = append(s, string(f))
	}
	return strings.Join(s, ", ")
}

// DiscoveredExpiring is the discovered part of the expiry report: the
// certificates found deployed that mica did not issue, still seen, and
// expiring within `within`, by class and owner. Who may read it is who
// may read the report.
func (a *Authority) DiscoveredExpiring(ctx context.Context, p Principal, within time.Duration, limit int) (store.DiscoveredReport, error) {
	if err := a.Authorize(p, ActReportRead, Resource{}); err != nil {
		return store.DiscoveredReport{}, err
	}
	ds, ok := a.store.(store.DiscoveryStore)
	if !ok || within <= 0 {
		return store.DiscoveredReport{}, nil
	}
	now := a.now()
	rep, err := ds.DiscoveredExpiring(ctx, store.ExpiringFilter{Now: now, Before: now.Add(within), Limit: limit})
	if err != nil {
		return rep, newError(KindInternal, err, "could not build the expiry report: %v", err)
	}
	return rep, nil
}

// WebhookReport is the webhook endpoints' delivery state.
type WebhookReport struct {
	States []store.WebhookState
	// Dead holds each endpoint's most recent dead letters.
	Dead map[string][]store.DeadLetter
	// LastSeq is the log's last event, to measure each cursor's lag by.
	LastSeq int64
}

// WebhookStates reads every webhook endpoint's delivery state, with up to
// deadLetters of each one's dead letters (auditors and up).
func (a *Authority) WebhookStates(ctx context.Context, p Principal, deadLetters int) (WebhookReport, error) {
	if err := a.Authorize(p, ActWebhookRead, Resource{}); err != nil {
		return WebhookReport{}, err
	}
	ws, ok := a.store.(store.WebhookStore)
	last, ok2 := a.store.(interface {
		LastEventSeq(ctx context.Context) (int64, error)
	})
	if !ok || !ok2 {
		return WebhookReport{}, newError(KindInternal, nil, "this store keeps no webhook state")
	}
	var rep WebhookReport
	var err error
	if rep.LastSeq, err = last.LastEventSeq(ctx); err != nil {
		return rep, newError(KindInternal, err, "could not read the event log: %v", err)
	}
	if rep.States, err = ws.WebhookStates(ctx); err != nil {
		return rep, newError(KindInternal, err, "could not read webhook state: %v", err)
	}
	rep.Dead = map[string][]store.DeadLetter{}
	if deadLetters > 0 {
		for _, st := range rep.States {
			if st.DeadLetters == 0 {
				continue
			}
			if rep.Dead[st.Endpoint], err = ws.DeadLetters(ctx, st.Endpoint, deadLetters); err != nil {
				return rep, newError(KindInternal, err, "could not read dead letters: %v", err)
			}
		}
	}
	return rep, nil
}
