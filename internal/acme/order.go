package acme

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

type newOrderPayload struct {
	Identifiers []ident `json:"identifiers"`
	NotBefore   string  `json:"notBefore"`
	NotAfter    string  `json:"notAfter"`
	Replaces    string  `json:"replaces"`
}

// maxIdentifiers bounds one order; policy may allow fewer.
const maxIdentifiers = 100

// newOrder creates an order with one authorization per identifier and
// http-01, tls-alpn-01 and dns-01 challenges for each (§7.4). The profile is
// asked first, so an identifier it would refuse is refused now, not after
// the client has proved control of it.
func (s *Server) newOrder(ctx context.Context, r *request) (*response, *problem) {
	if r.acct == nil {
		return nil, malformed("newOrder must be signed with kid, the account URL")
	}
	var p newOrderPayload
	if err := json.Unmarshal(r.payload, &p); err != nil {
		return nil, malformed("the newOrder payload is not a JSON object: %v", err)
	}
	if p.NotBefore != "" || p.NotAfter != "" {
		return nil, malformed("notBefore and notAfter are not supported: the profile sets the lifetime; leave them out")
	}
	if len(p.Identifiers) == 0 || len(p.Identifiers) > maxIdentifiers {
		return nil, malformed("an order needs 1 to %d identifiers, not %d", maxIdentifiers, len(p.Identifiers))
	}
	id, names, prob := orderIdentity(p.Identifiers)
	if prob != nil {
		return nil, prob
	}
	if err := s.auth.CheckIdentity(s.set.Profile, id); err != nil {
		if prob := fromAuthority(err); prob != nil {
			if prob.Type == errorNS+errRejectedIdentifier || prob.Type == errorNS+errUnauthorized {
				prob.Type = errorNS + errRejectedIdentifier
				prob.Status = http.StatusBadRequest
			}
			return nil, prob
		}
		return nil, internal(err)
	}
	if wait := s.limits.allowOrder(ctx, r.acct.ID, names); wait > 0 {
		p := newProblem(errRateLimited, http.StatusTooManyRequests, "too many new orders for this account or identifier: retry after %d seconds", wait)
		p.retryAfter = wait
		return nil, p
	}
	now := s.now().UTC()
	o := &order{Account: r.acct.ID, Status: statusPending, Expires: now.Add(orderLifetime), Identifiers: p.Identifiers, Replaces: p.Replaces}
	var err error
	if o.ID, err = s.newID(); err != nil {
		return nil, internal(err)
	}
	var recs []store.ACMERecord
	for _, in := range p.Identifiers {
		z := &authorization{Account: r.acct.ID, Identifier: in, Status: statusPending, Expires: o.Expires}
		if z.ID, err = s.newID(); err != nil {
			return nil, internal(err)
		}
		types := []string{challengeHTTP01, challengeTLSALPN01, challengeDNS01}
		if strings.HasPrefix(in.Value, "*.") {
			z.Wildcard, z.Identifier.Value, types = true, strings.TrimPrefix(in.Value, "*."), []string{challengeDNS01}
		} else if in.Type == "ip" {
			types = []string{challengeHTTP01}
		}
		for _, t := range types {
			c := &challenge{Authz: z.ID, Type: t, Status: statusPending}
			if c.ID, err = s.newID(); err != nil {
				return nil, internal(err)
			}
			if c.Token, err = s.token(); err != nil {
				return nil, internal(err)
			}
			z.Challenges = append(z.Challenges, c.ID)
			recs = append(recs, c.record())
		}
		o.Authzs = append(o.Authzs, z.ID)
		recs = append(recs, z.record())
	}
	recs = append(recs, o.record())
	if err := s.store.CreateACME(ctx, recs...); err != nil {
		return nil, internal(err)
	}
	return &response{status: http.StatusCreated, body: o.view(r.base), location: r.base + "order/" + o.ID}, nil
}

// orderIdentity turns ACME identifiers into mica's identity: dns and ip only
// (RFC 8555, RFC 8738).
func orderIdentity(ids []ident) (identity.Identity, []string, *problem) {
	var names []string
	for _, in := range ids {
		switch in.Type {
		case "dns":
			if _, err := netip.ParseAddr(in.Value); err == nil {
				return identity.Identity{}, nil, newProblem(errRejectedIdentifier, http.StatusBadRequest, "dns identifier %q is an IP address: send it as type ip", in.Value)
			}
		case "ip":
			if _, err := netip.ParseAddr(in.Value); err != nil {
				return identity.Identity{}, nil, newProblem(errRejectedIdentifier, http.StatusBadRequest, "ip identifier %q is not an IP address", in.Value)
			}
		default:
			return identity.Identity{}, nil, newProblem(errUnsupportedIdentifier, http.StatusBadRequest, "identifier type %q is not supported: use dns or ip", in.Type)
		}
		if strings.ContainsAny(in.Value, ", ") {
			return identity.Identity{}, nil, newProblem(errRejectedIdentifier, http.StatusBadRequest, "identifier %q is not a valid name", in.Value)
		}
		names = append(names, in.Value)
	}
	id, err := identity.Parse(strings.Join(names, ","))
	if err != nil {
		return identity.Identity{}, nil, newProblem(errRejectedIdentifier, http.StatusBadRequest, "%v", err)
	}
	return id, names, nil
}

// order reads an order (POST-as-GET), first bringing its status up to date
// with its authorizations.
func (s *Server) order(ctx context.Context, r *request) (*response, *problem) {
	o, prob := s.ownOrder(ctx, r)
	if prob != nil {
		return nil, prob
	}
	resp := &response{body: o.view(r.base)}
	if o.Status == statusProcessing {
		resp.retry = 1
	}
	return resp, nil
}

func (s *Server) ownOrder(ctx context.Context, r *request) (*order, *problem) {
	if r.acct == nil {
		return nil, malformed("this request must be signed with kid, the account URL")
	}
	o, err := s.loadOrder(ctx, r.http.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, newProblem(errMalformed, http.StatusNotFound, "no order %s", r.http.PathValue("id"))
	}
	if err != nil {
		return nil, internal(err)
	}
	if o.Account != r.acct.ID {
		return nil, unauthorized("order %s belongs to another account", o.ID)
	}
	if err := s.refreshOrder(ctx, o); err != nil {
		return nil, internal(err)
	}
	return o, nil
}

// refreshOrder derives a pending order's status from its authorizations
// (§7.1.6): ready once all are valid, invalid once any is not, invalid when
// expired. The change is stored compare-and-swap, so concurrent readers agree.
func (s *Server) refreshOrder(ctx context.Context, o *order) error {
	before := o.Status
	if (o.Status == statusPending || o.Status == statusReady) && s.now().After(o.Expires) {
		o.Status, o.Error = statusInvalid, malformed("the order expired before it was finalized")
	} else if o.Status == statusPending {
		next := statusReady
		for _, zid := range o.Authzs {
			z, err := s.loadAuthz(ctx, zid)
			if err != nil {
				return err
			}
			switch z.Status {
			case statusValid:
			case statusPending:
				next = statusPending
			default:
				o.Status, o.Error = statusInvalid, unauthorized("authorization for %s is %s", z.Identifier.Value, z.Status)
			}
			if o.Status == statusInvalid {
				break
			}
		}
		if o.Status != statusInvalid {
			o.Status = next
		}
	}
	if o.Status == before {
		return nil
	}
	err := s.update(ctx, o.record(), before)
	if errors.Is(err, store.ErrConflict) {
		// Someone else moved it first; theirs is the truth.
		fresh, err := s.loadOrder(ctx, o.ID)
		if err != nil {
			return err
		}
		*o = *fresh
		return nil
	}
	return err
}

type finalizePayload struct {
	CSR string `json:"csr"`
}

// finalizeTimeout bounds one issuance. The issuance runs to the end even
// when the client goes away (its outcome is the order's), but no longer
// than this, so that an order still processing after stuckAfter can only
// be one whose server stopped.
const finalizeTimeout = time.Minute

// finalize issues the order's certificate through the authority (§7.4). The
// order moves ready → processing compare-and-swap, so only one finalize of
// an order reaches the authority; issuance is synchronous, so the answer
// is already valid (or the CSR's problem).
func (s *Server) finalize(ctx context.Context, r *request) (*response, *problem) {
	o, prob := s.ownOrder(ctx, r)
	if prob != nil {
		return nil, prob
	}
	if o.Status != statusReady {
		return nil, newProblem(errOrderNotReady, http.StatusForbidden, "order %s is %s, not ready: complete its authorizations first", o.ID, o.Status)
	}
	var p finalizePayload
	if err := json.Unmarshal(r.payload, &p); err != nil {
		return nil, malformed("the finalize payload is not a JSON object: %v", err)
	}
	csr, err := base64.RawURLEncoding.DecodeString(p.CSR)
	if err != nil || len(csr) == 0 {
		return nil, newProblem(errBadCSR, http.StatusBadRequest, "csr must be the DER CSR, base64url without padding")
	}
	// The CSR and the time are kept while processing, so that if this
	// server stops before the order is settled, the certificate issued for
	// it can be found (recover.go).
	o.Status, o.ProcessingSince, o.CSR, o.Error = statusProcessing, s.now().UTC(), csr, nil
	if err := s.update(ctx, o.record(), statusReady); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, newProblem(errOrderNotReady, http.StatusForbidden, "order %s is being finalized by another request", o.ID)
		}
		return nil, internal(err)
	}
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalizeTimeout)
	defer cancel()
	id, _, _ := orderIdentity(o.Identifiers)
	iss, err := s.auth.IssueACME(ictx, authority.ACMERequest{
		Account: s.accountURL(o.Account), Profile: s.set.Profile, Identity: id, CSR: csr,
		AccountKey: r.acct.jwk.Key, Source: source(r.http), Replaces: serialFromCertID(o.Replaces),
	})
	if err != nil {
		return nil, s.finalizeFailed(ictx, o, err)
	}
	o.settled(statusValid)
	o.Serial, o.Chain = iss.Record.Serial, chainPEM(iss.Certificate, iss.Chain)
	if err := s.storeIssued(ictx, o); err != nil {
		return nil, internal(err)
	}
	return &response{body: o.view(r.base), location: r.base + "order/" + o.ID}, nil
}

// finalizeFailed moves an order whose issuance failed out of processing
// and says why. A bad CSR leaves it ready, so the client can send a good
// one, and a rate limit so it can finalize after Retry-After; any other
// refusal ends the order. A failure that is not a refusal leaves the
// outcome unknown (the certificate may have committed), so the order is
// settled as after a crash.
func (s *Server) finalizeFailed(ctx context.Context, o *order, err error) *problem {
	prob := fromAuthority(err)
	if prob == nil {
		s.log.LogAttrs(ctx, slog.LevelError, "acme: finalize failed", slog.String("order", o.ID), slog.String("error", err.Error()))
		if _, serr := s.settle(ctx, o); serr != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "acme: settling a failed finalize", slog.String("order", o.ID), slog.String("error", serr.Error()))
		}
		return internal(err)
	}
	next := statusInvalid
	if prob.Type == errorNS+errBadCSR || prob.Type == errorNS+errRateLimited {
		next = statusReady
	}
	o.settled(next)
	if next == statusInvalid {
		o.Error = prob
	}
	if uerr := s.update(ctx, o.record(), statusProcessing); uerr != nil {
		return internal(uerr)
	}
	return prob
}

// storeIssued records the certificate on an order that was processing. If
// the order was settled meanwhile (a stalled server is taken for a
// stopped one), the certificate is still the truth: a settled valid order
// is kept, a ready one is moved to valid.
func (s *Server) storeIssued(ctx context.Context, o *order) error {
	err := s.update(ctx, o.record(), statusProcessing)
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	fresh, lerr := s.loadOrder(ctx, o.ID)
	if lerr != nil {
		return lerr
	}
	switch fresh.Status {
	case statusValid:
		*o = *fresh
		return nil
	case statusReady:
		return s.update(ctx, o.record(), statusReady)
	}
	return err
}

// chainPEM is the leaf and its intermediates as the download serves them.
func chainPEM(leaf *x509.Certificate, intermediates []*x509.Certificate) string {
	var b strings.Builder
	for _, c := range append([]*x509.Certificate{leaf}, intermediates...) {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

// certificate downloads the issued chain as PEM (§7.4.2).
func (s *Server) certificate(ctx context.Context, r *request) (*response, *problem) {
	o, prob := s.ownOrder(ctx, r)
	if prob != nil {
		return nil, prob
	}
	if o.Status != statusValid {
		return nil, newProblem(errMalformed, http.StatusNotFound, "order %s has no certificate yet", o.ID)
	}
	return &response{raw: []byte(o.Chain), ctype: "application/pem-certificate-chain"}, nil
}
