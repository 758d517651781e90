package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

var _ store.DiscoveryStore = (*Store)(nil)

// Discovered certificates are written straight to the database, one
// transaction per report, not through the group committer: reports are
// rare next to issuances, and a report's writes depend on what its own
// transaction reads (which sightings a rescan ended).

// discoveredCols are the discovered_certificates columns scanDiscovered
// reads, in its order.
var discoveredCols = []string{"fingerprint", "serial", "subject", "issuer", "identity", "sans", "not_before", "not_after",
	"key_type", "class", "findings", "owner", "der", "first_seen", "last_seen", "gone_at"}

// discoveredSelect lists discoveredCols for a SELECT, each after prefix
// (a table alias and a dot), DER left empty unless withDER.
func discoveredSelect(prefix string, withDER bool) string {
	out := make([]string, len(discoveredCols))
	for i, c := range discoveredCols {
		out[i] = prefix + c
		if c == "der" && !withDER {
			out[i] = "''"
		}
	}
	return strings.Join(out, ", ")
}

var (
	discoveredColumns      = discoveredSelect("", true)
	discoveredColumnsNoDER = discoveredSelect("", false)
)

const sightingColumns = "fingerprint, location, reporter, findings, detail, scan_id, first_seen, last_seen, gone_at"

// RecordDiscovery implements store.DiscoveryStore.
func (s *Store) RecordDiscovery(ctx context.Context, b store.DiscoveryBatch) (store.DiscoveryResult, error) {
	if err := checkBatch(b); err != nil {
		return store.DiscoveryResult{}, s.errorf("discovery report: %w", err)
	}
	var res store.DiscoveryResult
	err := inTx(ctx, s.write, &s.d, "record a discovery report", func(tx Conn) error {
		res = store.DiscoveryResult{}
		at := micros(b.At)
		affected := map[string]bool{}
		for _, c := range b.Certificates {
			isNew, err := s.upsertDiscovered(ctx, tx, c, at)
			if err != nil {
				return err
			}
			if isNew {
				res.New = append(res.New, withoutDER(c))
			}
			affected[c.Fingerprint] = true
		}
		for _, sg := range b.Sightings {
			_, err := tx.Exec(ctx, s.d.rebind("INSERT INTO discovery_sightings ("+sightingColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"+
				" ON CONFLICT (fingerprint, location, reporter) DO UPDATE SET findings = excluded.findings, detail = excluded.detail,"+
				" scan_id = excluded.scan_id, last_seen = excluded.last_seen, gone_at = NULL"),
				sg.Fingerprint, sg.Location, b.Reporter, joinFindings(sg.Findings), sg.Detail, b.ScanID, at, at)
			if err != nil {
				return s.errorf("record sighting %s at %s: %w", sg.Fingerprint, sg.Location, err)
			}
		}
		// A location the report covers that no longer shows a certificate
		// seen there before: that sighting is gone.
		for _, loc := range b.Scanned {
			n, err := s.endSightings(ctx, tx, affected, at, "location = ? AND last_seen < ?", b.Reporter, loc, at)
			if err != nil {
				return err
			}
			res.SightingsGone += n
		}
		// A finished tree: what this scan did not see under it is gone.
		for _, dir := range b.Complete {
			n, err := s.endSightings(ctx, tx, affected, at,
				"(location = ? OR substr(location, 1, ?) = ? OR substr(location, 1, ?) = ?) AND scan_id <> ?",
				b.Reporter, dir, len(dir)+1, dir+"/", len(dir)+1, dir+"#", b.ScanID)
			if err != nil {
				return err
			}
			res.SightingsGone += n
		}
		fps := make([]string, 0, len(affected))
		for fp := range affected {
			fps = append(fps, fp)
		}
		slices.Sort(fps)
		for _, fp := range fps {
			gone, err := s.settleDiscovered(ctx, tx, fp, at)
			if err != nil {
				return err
			}
			if gone != nil {
				res.Gone = append(res.Gone, *gone)
			}
		}
		return nil
	})
	return res, err
}

func checkBatch(b store.DiscoveryBatch) error {
	switch {
	case b.Reporter == "":
		return errors.New("the batch names no reporter: every sighting is someone's")
	case b.At.IsZero():
		return errors.New("the batch has no time: set At from the authority's clock")
	}
	known := map[string]bool{}
	for _, c := range b.Certificates {
		if c.Fingerprint == "" || len(c.DER) == 0 || c.NotAfter.IsZero() {
			return errors.New("a certificate lacks its fingerprint, DER or NotAfter")
		}
		known[c.Fingerprint] = true
	}
	for _, sg := range b.Sightings {
		if !known[sg.Fingerprint] || sg.Location == "" {
			return fmt.Errorf("sighting at %q names a certificate not in the batch", sg.Location)
		}
	}
	return nil
}

func withoutDER(c store.DiscoveredCertificate) store.DiscoveredCertificate {
	c.DER = nil
	return c
}

// upsertDiscovered inserts c, or refreshes the row of a certificate seen
// before (keeping when it was first seen and an owner already set), and
// reports whether it is new.
func (s *Store) upsertDiscovered(ctx context.Context, tx Conn, c store.DiscoveredCertificate, at int64) (bool, error) {
	sans, err := json.Marshal(nonNil(c.SANs))
	if err != nil {
		return false, err
	}
	own := joinFindings(c.Findings)
	n, err := tx.Exec(ctx, s.d.rebind("INSERT INTO discovered_certificates ("+discoveredColumns+", own_findings, discovered_seq, disappeared_seq)"+
		" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, 0, 0) ON CONFLICT (fingerprint) DO NOTHING"),
		c.Fingerprint, c.Serial, c.Subject, c.Issuer, c.Identity, string(sans), micros(c.NotBefore), micros(c.NotAfter),
		c.KeyType, c.Class, own, c.Owner, c.DER, at, at, own)
	if err != nil {
		return false, s.errorf("record discovered certificate %s: %w", c.Fingerprint, err)
	}
	if n == 1 {
		return true, nil
	}
	// Seen again: a certificate that had gone is back, and its next
	// disappearance is a new event.
	_, err = tx.Exec(ctx, s.d.rebind("UPDATE discovered_certificates SET last_seen = ?, class = ?, own_findings = ?,"+
		" owner = CASE WHEN owner = '' THEN ? ELSE owner END,"+
		" disappeared_seq = CASE WHEN gone_at IS NULL THEN disappeared_seq ELSE 0 END, gone_at = NULL WHERE fingerprint = ?"),
		at, c.Class, own, c.Owner, c.Fingerprint)
	if err != nil {
		return false, s.errorf("refresh discovered certificate %s: %w", c.Fingerprint, err)
	}
	return false, nil
}

// endSightings marks gone the live sightings of reporter matching where
// (whose arguments follow reporter) and adds their certificates to
// affected.
func (s *Store) endSightings(ctx context.Context, tx Conn, affected map[string]bool, at int64, where string, reporter string, args ...any) (int, error) {
	cond := " WHERE reporter = ? AND gone_at IS NULL AND " + where
	all := append([]any{reporter}, args...)
	fps, err := queryAll(ctx, tx, s.d.rebind("SELECT fingerprint FROM discovery_sightings"+cond), all, scanOne[string])
	if err != nil {
		return 0, s.errorf("find ended sightings: %w", err)
	}
	if len(fps) == 0 {
		return 0, nil
	}
	n, err := tx.Exec(ctx, s.d.rebind("UPDATE discovery_sightings SET gone_at = ?"+cond), append([]any{at}, all...)...)
	if err != nil {
		return 0, s.errorf("end sightings: %w", err)
	}
	for _, fp := range fps {
		affected[fp] = true
	}
	return int(n), nil
}

// settleDiscovered sets a certificate's findings to its own and its live
// sightings', and marks it gone when no sighting is live; it returns the
// certificate when this made it gone.
func (s *Store) settleDiscovered(ctx context.Context, tx Conn, fp string, at int64) (*store.DiscoveredCertificate, error) {
	live, err := queryAll(ctx, tx, s.d.rebind("SELECT findings FROM discovery_sightings WHERE fingerprint = ? AND gone_at IS NULL"), []any{fp}, scanOne[string])
	if err != nil {
		return nil, s.errorf("read sightings of %s: %w", fp, err)
	}
	var own string
	var goneAt *int64
	if err := tx.QueryRow(ctx, s.d.rebind("SELECT own_findings, gone_at FROM discovered_certificates WHERE fingerprint = ?"), fp).Scan(&own, &goneAt); err != nil {
		return nil, s.errorf("read discovered certificate %s: %w", fp, err)
	}
	all := splitFindings(own)
	for _, f := range live {
		all = append(all, splitFindings(f)...)
	}
	findings := joinFindings(all)
	if len(live) > 0 || goneAt != nil {
		_, err = tx.Exec(ctx, s.d.rebind("UPDATE discovered_certificates SET findings = ? WHERE fingerprint = ?"), findings, fp)
		if err != nil {
			return nil, s.errorf("update discovered certificate %s: %w", fp, err)
		}
		return nil, nil
	}
	if _, err = tx.Exec(ctx, s.d.rebind("UPDATE discovered_certificates SET findings = ?, gone_at = ? WHERE fingerprint = ?"), findings, at, fp); err != nil {
		return nil, s.errorf("mark discovered certificate %s gone: %w", fp, err)
	}
	c, err := scanDiscovered(tx.QueryRow(ctx, s.d.rebind("SELECT "+discoveredColumnsNoDER+" FROM discovered_certificates WHERE fingerprint = ?"), fp).Scan)
	if err != nil {
		return nil, s.errorf("read discovered certificate %s: %w", fp, err)
	}
	return &c, nil
}

// PendingDiscoveryEvents implements store.DiscoveryStore.
func (s *Store) PendingDiscoveryEvents(ctx context.Context, most int) (newOnes, gone []store.DiscoveredCertificate, err error) {
	n, err := limit(most)
	if err != nil {
		return nil, nil, s.errorf("pending discovery events: %w", err)
	}
	sel := "SELECT " + discoveredColumnsNoDER + " FROM discovered_certificates WHERE "
	newOnes, err = queryAll(ctx, s.read, sel+fmt.Sprintf("discovered_seq = 0 ORDER BY first_seen LIMIT %d", n), nil, scanDiscovered)
	if err != nil {
		return nil, nil, s.errorf("pending discovery events: %w", err)
	}
	gone, err = queryAll(ctx, s.read, sel+fmt.Sprintf("gone_at IS NOT NULL AND disappeared_seq = 0 ORDER BY gone_at LIMIT %d", n), nil, scanDiscovered)
	if err != nil {
		return nil, nil, s.errorf("pending discovery events: %w", err)
	}
	return newOnes, gone, nil
}

// MarkDiscoveryEvent implements store.DiscoveryStore.
func (s *Store) MarkDiscoveryEvent(ctx context.Context, fingerprint string, kind store.DiscoveryEventKind, seq int64) error {
	col := "discovered_seq"
	switch kind {
	case store.DiscoveredEvent:
	case store.DisappearedEvent:
		col = "disappeared_seq"
	default:
		return s.errorf("unknown discovery event kind %d", kind)
	}
	n, err := s.write.Exec(ctx, s.d.rebind("UPDATE discovered_certificates SET "+col+" = ? WHERE fingerprint = ?"), seq, fingerprint)
	switch {
	case err != nil:
		return s.errorf("mark discovery event of %s: %w", fingerprint, err)
	case n == 0:
		return s.errorf("discovered certificate %s: %w", fingerprint, store.ErrNotFound)
	}
	return nil
}

// DiscoveredCertificates implements store.DiscoveryStore.
func (s *Store) DiscoveredCertificates(ctx context.Context, f store.DiscoveryFilter) ([]store.DiscoveredCertificate, error) {
	b := &builder{ph: s.d.Placeholder}
	if !f.IncludeGone {
		b.conds = append(b.conds, "gone_at IS NULL")
	}
	for col, v := range map[string]string{"class": f.Class, "owner": f.Owner, "identity": f.Identity} {
		if v != "" {
			b.cond(col+" = %s", v)
		}
	}
	if f.Finding != "" {
		if strings.Trim(f.Finding, "abcdefghijklmnopqrstuvwxyz-") != "" {
			return nil, s.errorf("finding %q is not a finding's name", f.Finding)
		}
		b.cond("(',' || findings || ',') LIKE %s", "%,"+f.Finding+",%")
	}
	if !f.ExpiresBefore.IsZero() {
		b.cond("not_after < %s", micros(f.ExpiresBefore))
	}
	n, err := limit(f.Limit)
	if err != nil || f.Offset < 0 {
		return nil, s.errorf("discovered certificates: limit %d, offset %d: both must be whole numbers", f.Limit, f.Offset)
	}
	cols := discoveredColumnsNoDER
	if f.WithSightings {
		cols = discoveredColumns
	}
	q := query{SQL: "SELECT " + cols + " FROM discovered_certificates" + b.where() +
		fmt.Sprintf(" ORDER BY not_after, fingerprint LIMIT %d OFFSET %d", n, f.Offset), Args: b.args}
	certs, err := list(ctx, s, "discovered certificates", scanDiscovered, q, nil)
	if err != nil || !f.WithSightings {
		return certs, err
	}
	for i := range certs {
		certs[i].Sightings, err = queryAll(ctx, s.read, s.d.rebind("SELECT "+sightingColumns+" FROM discovery_sightings WHERE fingerprint = ?"+
			" ORDER BY gone_at IS NOT NULL, last_seen DESC, location"), []any{certs[i].Fingerprint}, scanSighting)
		if err != nil {
			return nil, s.errorf("sightings of %s: %w", certs[i].Fingerprint, err)
		}
	}
	return certs, nil
}

// DiscoveredByExpiry implements store.DiscoveryStore, in one aggregate
// query like CertificatesByExpiry.
func (s *Store) DiscoveredByExpiry(ctx context.Context, now time.Time) ([]store.DiscoveredCount, error) {
	var q query
	arg := func(v any) string {
		q.Args = append(q.Args, v)
		return s.d.Placeholder(len(q.Args))
	}
	cases := fmt.Sprintf(" WHEN not_after < %s THEN '%s'", arg(micros(now)), store.ExpiredWindow)
	for _, w := range store.ExpiryWindows {
		if w.Within == 0 {
			cases += fmt.Sprintf(" ELSE '%s'", w.Window)
			continue
		}
		cases += fmt.Sprintf(" WHEN not_after < %s THEN '%s'", arg(micros(now.Add(w.Within))), w.Window)
	}
	q.SQL = "SELECT class, CASE" + cases + " END AS expires_within, COUNT(*) FROM discovered_certificates" +
		" WHERE gone_at IS NULL GROUP BY class, expires_within"
	return list(ctx, s, "count discovered certificates by expiry", func(scan scanFunc) (store.DiscoveredCount, error) {
		var c store.DiscoveredCount
		var w string
		err := scan(&c.Class, &w, &c.Count)
		c.Window = store.ExpiryWindow(w)
		return c, err
	}, q, nil)
}

// DiscoveredFindings implements store.DiscoveryStore. Certificates share
// few combinations of findings, so the database groups by the combination
// and the counts per finding are summed here.
func (s *Store) DiscoveredFindings(ctx context.Context) ([]store.FindingCount, error) {
	type combo struct {
		findings string
		n        int64
	}
	rows, err := list(ctx, s, "count discovered findings", func(scan scanFunc) (combo, error) {
		var c combo
		return c, scan(&c.findings, &c.n)
	}, query{SQL: "SELECT findings, COUNT(*) FROM discovered_certificates WHERE gone_at IS NULL AND findings <> '' GROUP BY findings"}, nil)
	if err != nil {
		return nil, err
	}
	sums := map[string]int64{}
	for _, r := range rows {
		for _, f := range splitFindings(r.findings) {
			sums[f] += r.n
		}
	}
	out := make([]store.FindingCount, 0, len(sums))
	for f, n := range sums {
		out = append(out, store.FindingCount{Finding: f, Count: n})
	}
	slices.SortFunc(out, func(a, b store.FindingCount) int { return strings.Compare(a.Finding, b.Finding) })
	return out, nil
}

// DiscoveredExpiring implements store.DiscoveryStore: like ExpiringReport,
// two queries on one snapshot. Certificates mica issued (in the inventory)
// are left out: the issued part of the report holds them.
func (s *Store) DiscoveredExpiring(ctx context.Context, f store.ExpiringFilter) (store.DiscoveredReport, error) {
	if f.Now.IsZero() || !f.Before.After(f.Now) {
		return store.DiscoveredReport{}, s.errorf("discovered expiry report: Before must be after Now")
	}
	n, err := limit(f.Limit)
	if err != nil {
		return store.DiscoveredReport{}, s.errorf("discovered expiry report: %w", err)
	}
	where := s.d.rebind(" FROM discovered_certificates d WHERE d.gone_at IS NULL AND d.not_after > ? AND d.not_after <= ?" +
		" AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.fingerprint = d.fingerprint)")
	args := []any{micros(f.Now), micros(f.Before)}
	var rep store.DiscoveredReport
	var certs []store.DiscoveredCertificate
	err = s.read.InSnapshot(ctx, func(tx Conn) error {
		rep = store.DiscoveredReport{}
		err := queryEach(ctx, tx, "SELECT d.class, d.owner, count(*), min(d.not_after)"+where+
			fmt.Sprintf(" GROUP BY d.class, d.owner ORDER BY d.class, d.owner LIMIT %d", maxLimit), args, func(scan scanFunc) error {
			var g store.DiscoveredGroup
			var earliest int64
			if err := scan(&g.Class, &g.Owner, &g.Count, &earliest); err != nil {
				return err
			}
			g.EarliestExpiry = fromMicros(earliest)
			rep.Groups = append(rep.Groups, g)
			rep.Total += g.Count
			return nil
		})
		if err != nil {
			return err
		}
		certs, err = queryAll(ctx, tx, "SELECT "+discoveredSelect("d.", false)+where+fmt.Sprintf(" ORDER BY d.class, d.owner, d.not_after, d.fingerprint LIMIT %d", n), args, scanDiscovered)
		return err
	})
	if err != nil {
		return store.DiscoveredReport{}, s.errorf("discovered expiry report: %w", err)
	}
	for _, c := range certs {
		for i := range rep.Groups {
			if g := &rep.Groups[i]; g.Class == c.Class && g.Owner == c.Owner {
				g.Certificates = append(g.Certificates, c)
				rep.Listed++
			}
		}
	}
	return rep, nil
}

func scanDiscovered(scan scanFunc) (store.DiscoveredCertificate, error) {
	var (
		c                                        store.DiscoveredCertificate
		sans, findings                           string
		notBefore, notAfter, firstSeen, lastSeen int64
		goneAt                                   *int64
		der                                      any
	)
	err := scan(&c.Fingerprint, &c.Serial, &c.Subject, &c.Issuer, &c.Identity, &sans, &notBefore, &notAfter, &c.KeyType, &c.Class,
		&findings, &c.Owner, &der, &firstSeen, &lastSeen, &goneAt)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(sans), &c.SANs); err != nil {
		return c, fmt.Errorf("discovered certificate %s: SANs: %w", c.Fingerprint, err)
	}
	if b, ok := der.([]byte); ok && len(b) > 0 {
		c.DER = b
	}
	c.Findings = splitFindings(findings)
	c.NotBefore, c.NotAfter, c.FirstSeen, c.LastSeen = fromMicros(notBefore), fromMicros(notAfter), fromMicros(firstSeen), fromMicros(lastSeen)
	if goneAt != nil {
		c.GoneAt = fromMicros(*goneAt)
	}
	return c, nil
}

func scanSighting(scan scanFunc) (store.Sighting, error) {
	var (
		sg                  store.Sighting
		findings            string
		firstSeen, lastSeen int64
		goneAt              *int64
	)
	if err := scan(&sg.Fingerprint, &sg.Location, &sg.Reporter, &findings, &sg.Detail, &sg.ScanID, &firstSeen, &lastSeen, &goneAt); err != nil {
		return sg, err
	}
	sg.Findings = splitFindings(findings)
	sg.FirstSeen, sg.LastSeen = fromMicros(firstSeen), fromMicros(lastSeen)
	if goneAt != nil {
		sg.GoneAt = fromMicros(*goneAt)
	}
	return sg, nil
}

// joinFindings stores a set of findings as sorted, comma-separated text.
func joinFindings(f []string) string {
	f = slices.Clone(f)
	slices.Sort(f)
	return strings.Join(slices.Compact(f), ",")
}

func splitFindings(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
