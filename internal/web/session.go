package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/authority"
)

// Sessions. The cookie holds the session's secret; the authority keeps
// only its hash and answers, on every request, who the session acts as now
// (ResumeConsoleSession). The cookie is __Host- prefixed (Secure, Path=/,
// no Domain), HttpOnly and SameSite=Strict: script cannot read it, and no
// other site's page can make the browser send it.
//
// A change is a POST that carries a token derived from the session's
// secret (HMAC-SHA256, so it is bound to the session and needs no state)
// and comes from a page of this origin (Origin, or Sec-Fetch-Site when a
// browser sends no Origin). Either check alone stops a forged form; both
// must pass.

const (
	cookieName = "__Host-mica-console"
	// maxFormBytes bounds a posted form.
	maxFormBytes = 64 << 10
)

// session is a signed-in browser as the authority sees it now.
type session struct {
	authority.ConsoleSession
	secret string
	CSRF   string
}

// P is the principal the session acts as.
func (s *session) P() authority.Principal { return s.Principal }

// RoleList is the session's roles, for the page header.
func (s *session) RoleList() string {
	var out []string
	for _, r := range s.Principal.Roles {
		out = append(out, string(r))
	}
	return strings.Join(out, ", ")
}

func csrfToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("mica console csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// resume authenticates the request's session cookie with the authority.
func (c *Console) resume(r *http.Request) (*session, error) {
	ck, err := r.Cookie(cookieName)
	secret := ""
	if err == nil {
		secret = ck.Value
	}
	cs, err := c.cfg.Authority.ResumeConsoleSession(r.Context(), secret)
	if err != nil {
		return nil, err
	}
	return &session{ConsoleSession: cs, secret: secret, CSRF: csrfToken(secret)}, nil
}

type handler func(w http.ResponseWriter, r *http.Request, s *session)

// authed serves a page to a session; a browser without one is sent to
// sign in.
func (c *Console) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.resume(r)
		if err != nil {
			if authority.KindOf(err) == authority.KindUnauthenticated {
				// Forget a cookie that no longer opens anything; a request
				// without one (a link from another site, which SameSite
				// keeps the cookie from) must not end a good session.
				if _, err := r.Cookie(cookieName); err == nil {
					clearCookie(w)
				}
				http.Redirect(w, r, "/ui/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.refuse(w, r, nil, err)
			return
		}
		h(w, r, s)
	}
}

// action serves a change: a POST from this origin, by a session, with the
// session's token.
func (c *Console) action(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !sameOrigin(r) {
			c.fail(w, r, nil, http.StatusForbidden, "This form was not posted from a page of this console (its Origin is another site's): nothing was changed.")
			return
		}
		s, err := c.resume(r)
		if err != nil {
			c.refuse(w, r, nil, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			c.fail(w, r, s, http.StatusBadRequest, "The form could not be read: "+err.Error())
			return
		}
		if !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(s.CSRF)) {
			c.fail(w, r, s, http.StatusForbidden, "This form's token does not belong to your session (it is missing, or from another session): reload the page and try again. Nothing was changed.")
			return
		}
		h(w, r, s)
	}
}

// sameOrigin reports whether a POST comes from a page of this origin. A
// browser sends Origin on every POST; Sec-Fetch-Site is the fallback.
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		return o == "https://"+r.Host
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

func setCookie(w http.ResponseWriter, secret string, expires time.Time, now time.Time) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: secret, Path: "/", MaxAge: int(expires.Sub(now).Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// signinView is the sign-in page.
type signinView struct {
	Link        string // the one-time link's secret, posted back on confirm
	Identity    string // whom the link signs in
	Certificate string // whom the browser's client certificate names, if any
	Problem     string
	SignedOut   bool
	Next        string
}

// signinPage shows whom a link signs in and asks to confirm with a button:
// opening a link changes nothing, so a link previewer or a prefetch cannot
// spend it, and a person sees whose session they are about to start.
func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	v := signinView{SignedOut: r.URL.Query().Get("out") == "1", Next: safeNext(r.URL.Query().Get("next"))}
	status := http.StatusOK
	if link := r.URL.Query().Get("link"); link != "" {
		who, err := c.cfg.Authority.ConsoleLinkIdentity(r.Context(), link)
		if err != nil {
			v.Problem, status = detail(err), statusOrInternal(err)
		} else {
			v.Link, v.Identity = link, who
		}
	} else if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		p, err := c.cfg.Authority.Authenticate(r.Context(), r.TLS.PeerCertificates)
		if err == nil && c.cfg.Authority.Authorize(p, authority.ActConsoleSignIn, authority.Resource{}) == nil {
			v.Certificate = p.Name
		}
	}
	c.render(w, r, nil, status, "signin", "Sign in", "", v)
}

// signin opens a session from a link or the browser's client certificate.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		c.fail(w, r, nil, http.StatusForbidden, "This sign-in was not posted from this console's page: nobody was signed in.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, nil, http.StatusBadRequest, "The form could not be read: "+err.Error())
		return
	}
	var cs authority.ConsoleSession
	var err error
	switch {
	case r.PostForm.Get("link") != "":
		cs, err = c.cfg.Authority.OpenConsoleSession(r.Context(), r.PostForm.Get("link"), remoteAddr(r))
	case r.PostForm.Get("certificate") == "1" && r.TLS != nil:
		cs, err = c.cfg.Authority.OpenConsoleSessionWithCertificate(r.Context(), r.TLS.PeerCertificates, remoteAddr(r))
	default:
		c.fail(w, r, nil, http.StatusBadRequest, "Sign in with a link from `mica console login`, or with a client certificate.")
		return
	}
	if err != nil {
		if authority.KindOf(err) == authority.KindInternal {
			c.log.Error("console sign-in failed", "error", err.Error())
		}
		c.render(w, r, nil, statusOrInternal(err), "signin", "Sign in", "", signinView{Problem: detail(err)})
		return
	}
	// A browser signing in as someone else leaves its old session ended,
	// not merely forgotten.
	if old, err := r.Cookie(cookieName); err == nil {
		c.cfg.Authority.EndConsoleSession(r.Context(), old.Value, "replaced by a new sign-in in the same browser")
	}
	setCookie(w, cs.Secret, cs.ExpiresAt, c.now())
	next := safeNext(r.PostForm.Get("next"))
	if next == "" {
		next = Prefix
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := c.cfg.Authority.EndConsoleSession(r.Context(), s.secret, "signed out"); err != nil {
		c.refuse(w, r, s, err)
		return
	}
	clearCookie(w)
	http.Redirect(w, r, "/ui/signin?out=1", http.StatusSeeOther)
}

// safeNext keeps a post-sign-in destination only when it is a console
// page of this origin.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, Prefix+"signin") || strings.ContainsAny(next, "\\\r\n") || strings.Contains(next, "//") {
		return ""
	}
	return next
}

func detail(err error) string {
	var e *authority.Error
	if errors.As(err, &e) && e.Kind != authority.KindInternal {
		return e.Detail
	}
	return "The server failed to handle this request: see its log."
}

func statusOrInternal(err error) int {
	if s := statusOf[authority.KindOf(err)]; s != 0 {
		return s
	}
	return http.StatusInternalServerError
}
