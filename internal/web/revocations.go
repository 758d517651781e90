package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// maxDenied bounds the deny list shown; a list longer than this is a
// job for `mica identity list`.
const maxDenied = 500

type revocationsView struct {
	Revoked          []store.Certificate
	Offset, Next     int
	Prev             int
	HasNext, HasPrev bool
	RevokedProblem   string
	Denied           []store.Denial
	DeniedTotal      int
	DeniedProblem    string
	MayChange        bool // the session may change the deny list
	Done             string
}

func (c *Console) revocations(w http.ResponseWriter, r *http.Request, s *session) {
	v := revocationsView{Done: doneMessage(r.URL.Query().Get("done"))}
	if o := r.URL.Query().Get("offset"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 || n > maxOffset {
			c.fail(w, r, s, http.StatusBadRequest, "offset must be a whole number from 0 to 100000")
			return
		}
		v.Offset = n
	}
	revoked, err := c.cfg.Authority.ListCertificates(r.Context(), s.Principal, store.Filter{Status: store.StatusRevoked, Limit: pageSize + 1, Offset: v.Offset})
	switch {
	case err != nil && authority.KindOf(err) == authority.KindInternal:
		c.refuse(w, r, s, err)
		return
	case err != nil:
		v.RevokedProblem = detail(err)
	}
	if len(revoked) > pageSize {
		revoked, v.HasNext, v.Next = revoked[:pageSize], true, v.Offset+pageSize
	}
	v.Revoked, v.HasPrev, v.Prev = revoked, v.Offset > 0, max(0, v.Offset-pageSize)
	denied, err := c.cfg.Authority.DeniedIdentities(r.Context(), s.Principal)
	switch {
	case err != nil && authority.KindOf(err) == authority.KindInternal:
		c.refuse(w, r, s, err)
		return
	case err != nil:
		v.DeniedProblem = detail(err)
	}
	v.DeniedTotal = len(denied)
	if len(denied) > maxDenied {
		denied = denied[:maxDenied]
	}
	v.Denied = denied
	v.MayChange = c.cfg.Authority.Authorize(s.Principal, authority.ActIdentityDeny, authority.Resource{}) == nil
	c.render(w, r, s, http.StatusOK, "revocations", "Revocations and the deny list", "revocations", v)
}

// denyOrAllow changes the deny list; the authority decides.
func (c *Console) denyOrAllow(w http.ResponseWriter, r *http.Request, s *session) {
	id, reason := strings.TrimSpace(r.PostForm.Get("identity")), strings.TrimSpace(r.PostForm.Get("reason"))
	if id == "" || len(id) > 2048 {
		c.fail(w, r, s, http.StatusBadRequest, "Name one identity: a SPIFFE ID, DNS name or IP address.")
		return
	}
	change, done := c.cfg.Authority.Deny, "denied"
	if strings.HasSuffix(r.URL.Path, "/allow") {
		change, done = c.cfg.Authority.Allow, "allowed"
	}
	_, err := change(r.Context(), s.Principal, id, reason, remoteAddr(r))
	if c.pending(w, r, err) {
		return
	}
	if err != nil {
		c.refuse(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/ui/revocations?done="+done, http.StatusSeeOther)
}
