package web

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// pageSize is how many rows a listing shows; the store is asked for one
// more, to know whether there is a next page. No page reads more.
const pageSize = 50

// maxOffset bounds how deep a listing pages. An offset costs the store a
// walk of the index up to it; past this, narrow the filters instead.
const maxOffset = 100_000

// expiryChoices are the inventory's expiry windows.
var expiryChoices = []string{"1h", "24h", "7d", "30d", "90d"}

type inventoryView struct {
	Q, Profile, Owner, Status, Expires string
	ExpiryChoices                      []string
	Profiles                           []string
	Certificates                       []store.Certificate
	Offset, Next, Prev                 int
	HasNext, HasPrev                   bool
	Exact                              bool // Q was a serial and found
	Problem                            string
}

// inventory lists certificates a page at a time, newest expiry last (the
// store's order: by expiry, then serial), filtered by identity, profile,
// owner, status and expiry window. A query that reads as a serial number
// finds that certificate.
func (c *Console) inventory(w http.ResponseWriter, r *http.Request, s *session) {
	v := inventoryView{ExpiryChoices: expiryChoices, Profiles: c.profileNames()}
	var err error
	for _, p := range []struct {
		dst  *string
		name string
		max  int
	}{{&v.Q, "q", 2048}, {&v.Profile, "profile", 256}, {&v.Owner, "owner", 2048}, {&v.Status, "status", 16}, {&v.Expires, "expires", 16}} {
		if *p.dst, err = bounded(r, p.name, p.max); err != nil {
			c.fail(w, r, s, http.StatusBadRequest, err.Error())
			return
		}
	}
	f := store.Filter{Identity: v.Q, Profile: v.Profile, Owner: v.Owner, Limit: pageSize + 1}
	switch v.Status {
	case "", "active", "expired", "revoked":
		f.Status = store.Status(v.Status)
	default:
		c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("status %q is not one of active, expired or revoked", v.Status))
		return
	}
	if v.Expires != "" {
		d, err := duration.Parse(v.Expires)
		if err != nil || d <= 0 {
			c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("expires %q is not a window like 7d or 24h", v.Expires))
			return
		}
		// Expiring within the window: not yet expired, unless the status
		// filter says otherwise.
		f.ExpiresBefore = c.now().Add(d)
		if f.Status == "" {
			f.Status = store.StatusActive
		}
	}
	if o := r.URL.Query().Get("offset"); o != "" {
		if v.Offset, err = strconv.Atoi(o); err != nil || v.Offset < 0 || v.Offset > maxOffset {
			c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("offset %q must be a whole number from 0 to %d: narrow the filters to reach further", o, maxOffset))
			return
		}
	}
	f.Offset = v.Offset
	if looksLikeSerial(v.Q) {
		rec, err := c.cfg.Authority.Certificate(r.Context(), s.Principal, v.Q)
		switch {
		case err == nil:
			v.Certificates, v.Exact = []store.Certificate{rec}, true
			c.render(w, r, s, http.StatusOK, "inventory", "Inventory", "inventory", v)
			return
		case authority.KindOf(err) != authority.KindNotFound && authority.KindOf(err) != authority.KindInvalid:
			c.refuse(w, r, s, err)
			return
		}
	}
	certs, err := c.cfg.Authority.ListCertificates(r.Context(), s.Principal, f)
	if err != nil {
		if authority.KindOf(err) == authority.KindInternal {
			c.refuse(w, r, s, err)
			return
		}
		v.Problem = detail(err)
	}
	if len(certs) > pageSize {
		certs, v.HasNext, v.Next = certs[:pageSize], true, v.Offset+pageSize
	}
	v.Certificates = certs
	v.HasPrev, v.Prev = v.Offset > 0, max(0, v.Offset-pageSize)
	c.render(w, r, s, http.StatusOK, "inventory", "Inventory", "inventory", v)
}

// looksLikeSerial: hex digits (colons allowed, as openssl prints them),
// nothing an identity would hold.
func looksLikeSerial(q string) bool {
	h := strings.ReplaceAll(q, ":", "")
	if len(h) == 0 || len(h) > 40 {
		return false
	}
	_, err := hex.DecodeString(strings.Repeat("0", len(h)%2) + h)
	return err == nil
}

// profileNames are the profiles the inventory gauge knows, for the
// filter's suggestions.
func (c *Console) profileNames() []string {
	if c.cfg.Metrics == nil {
		return nil
	}
	fams, err := c.cfg.Metrics.Gather()
	if err != nil {
		return nil
	}
	var out []string
	if f := familyMap(fams)["mica_issuance_requests_total"]; f != nil {
		for _, m := range f.Metric {
			if p := label(m, "profile"); p != "other" && p != "none" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

type certificateView struct {
	Cert      store.Certificate
	Status    string
	Parsed    *x509.Certificate
	KeyType   string
	URIs      []string
	DNS       []string
	IPs       []string
	Chain     []chainLink
	History   []store.Certificate // the renewal chain back, newest first
	Current   []store.Certificate // live certificates of the identity now
	Proof     proofView
	PEM       string
	MayRevoke bool
	Reasons   []reasonChoice
	Done      string
}

type chainLink struct {
	Role        string
	Subject     string
	NotAfter    time.Time
	Fingerprint string
}

type proofView struct {
	Known               bool
	Problem             string
	LeafIndex, TreeSize int64
	Root                string
	SignedAt            time.Time
	Verified            bool
	Action              string
}

type reasonChoice struct {
	Code int
	Name string
}

// revokeReasons are the RFC 5280 reasons the console offers; certificateHold
// and removeFromCRL are not revocations mica makes.
var revokeReasons = func() []reasonChoice {
	var out []reasonChoice
	for _, code := range []int{0, 1, 2, 3, 4, 5, 9, 10} {
		out = append(out, reasonChoice{code, client.ReasonName(code)})
	}
	return out
}()

// maxHistory bounds the renewal chain shown.
const maxHistory = 10

func (c *Console) certificate(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, p := r.Context(), s.Principal
	rec, err := c.cfg.Authority.Certificate(ctx, p, r.PathValue("serial"))
	if err != nil {
		c.refuse(w, r, s, err)
		return
	}
	v := certificateView{Cert: rec, Reasons: revokeReasons, Done: doneMessage(r.URL.Query().Get("done"))}
	v.Status = certStatus(rec, c.now())
	if cert, err := x509.ParseCertificate(rec.DER); err == nil {
		v.Parsed = cert
		v.KeyType = keyType(cert)
		for _, u := range cert.URIs {
			v.URIs = append(v.URIs, u.String())
		}
		v.DNS = cert.DNSNames
		for _, ip := range cert.IPAddresses {
			v.IPs = append(v.IPs, ip.String())
		}
		v.Chain = c.chainOf(cert)
	}
	v.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.DER}))
	for prev := rec.RenewedFrom; prev != "" && len(v.History) < maxHistory; {
		h, err := c.cfg.Authority.Certificate(ctx, p, prev)
		if err != nil {
			break
		}
		v.History = append(v.History, h)
		prev = h.RenewedFrom
	}
	if cur, err := c.cfg.Authority.ListCertificates(ctx, p, store.Filter{Identity: rec.Identity, Status: store.StatusActive, Limit: maxHistory}); err == nil {
		for _, x := range cur {
			if x.Serial != rec.Serial {
				v.Current = append(v.Current, x)
			}
		}
	}
	v.Proof = c.proof(ctx, p, rec.Serial)
	v.MayRevoke = v.Status == "active" && c.cfg.Authority.MayRevoke(p, rec) == nil
	c.render(w, r, s, http.StatusOK, "certificate", "Certificate "+rec.Identity, "inventory", v)
}

// chainOf is the certificate's path to a root in the server's bundle.
func (c *Console) chainOf(leaf *x509.Certificate) []chainLink {
	roots, inters := c.cfg.Authority.Bundle()
	out := []chainLink{{Role: "certificate", Subject: subjectOf(leaf), NotAfter: leaf.NotAfter, Fingerprint: authority.Fingerprint(leaf.Raw)}}
	cur := leaf
	for range 4 {
		var next *x509.Certificate
		role := "intermediate"
		for _, cand := range inters {
			if cur.CheckSignatureFrom(cand) == nil {
				next = cand
			}
		}
		if next == nil {
			role = "root"
			for _, cand := range roots {
				if cur.CheckSignatureFrom(cand) == nil {
					next = cand
				}
			}
		}
		if next == nil || next.Equal(cur) {
			break
		}
		out = append(out, chainLink{Role: role, Subject: subjectOf(next), NotAfter: next.NotAfter, Fingerprint: authority.Fingerprint(next.Raw)})
		if role == "root" {
			break
		}
		cur = next
	}
	return out
}

func subjectOf(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return "(no subject)"
}

func keyType(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return c.PublicKeyAlgorithm.String()
}

// proof asks for the inclusion proof of the certificate's issuance event
// and checks it here against the signed checkpoint, with the log's key.
func (c *Console) proof(ctx context.Context, p authority.Principal, serial string) proofView {
	pr, err := c.cfg.Authority.AuditProof(ctx, p, serial)
	if err != nil {
		return proofView{Problem: detail(err)}
	}
	v := proofView{Known: true, LeafIndex: pr.Event.LeafIndex, TreeSize: pr.Checkpoint.Size, Root: hex.EncodeToString(pr.Checkpoint.Root),
		SignedAt: pr.Checkpoint.Time, Action: string(pr.Event.Action)}
	key, err := c.cfg.Authority.AuditKey()
	if err != nil {
		v.Problem = detail(err)
		return v
	}
	cp, err := auditlog.OpenCheckpoint(pr.Checkpoint.Note, key)
	if err == nil {
		err = auditlog.VerifyInclusion(&pr.Event, pr.Event.LeafIndex, cp, pr.Hashes)
	}
	if err != nil {
		v.Problem = err.Error()
		return v
	}
	v.Verified = true
	return v
}

// doneMessages are what a page says after an action redirected to it; the
// query carries only the key, so nothing a link says is echoed.
var doneMessages = map[string]string{
	"revoked": "Revoked. The CRL, OCSP and the revocation feed have it now.",
	"denied":  "Put on the deny list: no door issues or renews it now.",
	"allowed": "Taken off the deny list.",
	"decided": "Your decision is recorded.",
	"verify":  "Verification started: this page shows its result when it is done.",
}

func doneMessage(key string) string { return doneMessages[key] }

// revoke revokes one certificate with the reason chosen. The authority
// decides whether the session may (and whether approvals hold it).
func (c *Console) revoke(w http.ResponseWriter, r *http.Request, s *session) {
	serial := r.PathValue("serial")
	code, err := strconv.Atoi(r.PostForm.Get("reason"))
	if err != nil || !slices.ContainsFunc(revokeReasons, func(rc reasonChoice) bool { return rc.Code == code }) {
		c.fail(w, r, s, http.StatusBadRequest, "Choose a revocation reason from the list.")
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		c.fail(w, r, s, http.StatusBadRequest, "Tick the box that confirms the revocation: it cannot be undone.")
		return
	}
	rec, err := c.cfg.Authority.Revoke(r.Context(), s.Principal, serial, code, remoteAddr(r))
	if c.pending(w, r, err) {
		return
	}
	if err != nil {
		c.refuse(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/ui/certificates/"+url.PathEscape(rec.Serial)+"?done=revoked", http.StatusSeeOther)
}

// pending sends a request the authority held for approvers to the
// approvals page, which shows it.
func (c *Console) pending(w http.ResponseWriter, r *http.Request, err error) bool {
	var e *authority.Error
	if !errors.As(err, &e) || e.Kind != authority.KindApprovalPending || e.Pending == nil {
		return false
	}
	http.Redirect(w, r, "/ui/approvals?held="+url.QueryEscape(e.Pending.ID), http.StatusSeeOther)
	return true
}

// prettyJSON indents stored parameters for reading; what is not JSON is
// shown as it is.
func prettyJSON(raw []byte) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
