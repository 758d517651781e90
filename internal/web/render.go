package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

//go:embed templates static
var assets embed.FS

// page is one page's template set: the layout and the page's content.
type page struct{ t *template.Template }

// pageNames are the templates under templates/, one per page.
var pageNames = []string{"signin", "error", "overview", "inventory", "certificate", "timeline", "revocations", "audit", "approvals", "report"}

func loadPages() (map[string]*page, error) {
	out := map[string]*page{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		out[name] = &page{t: t}
	}
	return out, nil
}

// staticFiles are the embedded assets with their content hash, which
// their URLs carry so that they can be cached for good.
var staticFiles = func() map[string]staticFile {
	out := map[string]staticFile{}
	entries, _ := fs.ReadDir(assets, "static")
	for _, e := range entries {
		data, _ := fs.ReadFile(assets, "static/"+e.Name())
		sum := sha256.Sum256(data)
		ct := "text/plain; charset=utf-8"
		switch path.Ext(e.Name()) {
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		out[e.Name()] = staticFile{data: data, hash: hex.EncodeToString(sum[:6]), contentType: ct}
	}
	return out
}()

type staticFile struct {
	data        []byte
	hash        string
	contentType string
}

func (c *Console) static(w http.ResponseWriter, r *http.Request) {
	f, ok := staticFiles[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	if r.URL.Query().Get("v") == f.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(f.data)
}

// asset is the URL of an embedded file, with its hash.
func asset(name string) string { return Prefix + "static/" + name + "?v=" + staticFiles[name].hash }

// view is what every page's template gets.
type view struct {
	Title       string
	Section     string // the navigation entry to mark current
	Nonce       string
	TrustDomain string
	Session     *session
	Now         time.Time
	// Pending is how many approval requests wait (for the navigation).
	Pending int
	Data    any
}

// render writes a page. A template error is a bug; it is logged and the
// person gets a plain error rather than half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, name, title, section string, data any) {
	p := c.pages[name]
	v := view{Title: title, Section: section, Nonce: nonceOf(r), TrustDomain: c.cfg.TrustDomain, Session: s, Now: c.now(), Data: data}
	if s != nil {
		v.Pending = c.pendingCount(r, s)
	}
	var buf bytes.Buffer
	if err := p.t.Execute(&buf, v); err != nil {
		c.log.LogAttrs(r.Context(), slog.LevelError, "console template failed", slog.String("page", name), slog.String("error", err.Error()))
		http.Error(w, "the console failed to render this page: see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// pendingCount is the number of approval requests the session may see
// waiting; 0 when it may see none.
func (c *Console) pendingCount(r *http.Request, s *session) int {
	list, err := c.cfg.Authority.Approvals(r.Context(), s.Principal, store.ApprovalFilter{Status: store.ApprovalPending, Limit: 100})
	if err != nil {
		return 0
	}
	return len(list)
}

var funcs = template.FuncMap{
	"asset": asset,
	// when is a time in UTC, to the minute, for tables.
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	// stamp is a time to the second, for the audit log.
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	// date is a day, for far dates.
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"day":  func(t time.Time) string { return t.UTC().Format("Mon 2 Jan") },
	// rel says how far t is from now in words: "in 3d 4h", "5m ago".
	"rel": func(t, now time.Time) string {
		if t.IsZero() {
			return ""
		}
		d := t.Sub(now)
		if d >= 0 {
			return "in " + span(d)
		}
		return span(-d) + " ago"
	},
	"span":    span,
	"seconds": func(s float64) string { return span(time.Duration(s * float64(time.Second))) },
	"reason":  client.ReasonName,
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
	"join":   strings.Join,
	"status": certStatus,
	"num": func(v any) string {
		switch n := v.(type) {
		case int:
			return group(int64(n))
		case int64:
			return group(n)
		case float64:
			if n == float64(int64(n)) {
				return group(int64(n))
			}
			return fmt.Sprintf("%.1f", n)
		}
		return fmt.Sprint(v)
	},
	"roles": func(rs []authority.Role) string {
		var out []string
		for _, r := range rs {
			out = append(out, string(r))
		}
		return strings.Join(out, ", ")
	},
	"add": func(a, b int) int { return a + b },
	"sub": func(a, b int) int { return a - b },
	"query": func(kv ...string) template.URL {
		q := make([]string, 0, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				q = append(q, template.URLQueryEscaper(kv[i])+"="+template.URLQueryEscaper(kv[i+1]))
			}
		}
		return template.URL(strings.Join(q, "&"))
	},
	"itoa":  func(i int) string { return fmt.Sprint(i) },
	"i64":   func(i int64) string { return fmt.Sprint(i) },
	"sub64": func(a, b int64) int64 { return a - b },
	"plus":  func(a, b float64) float64 { return a + b },
	"minus": func(a, b float64) float64 { return a - b },
	// certs is the input of the certtable template.
	"certs": func(label string, list []store.Certificate, now time.Time) certTable {
		return certTable{Label: label, Certs: list, Now: now}
	},
}

type certTable struct {
	Label string
	Certs []store.Certificate
	Now   time.Time
}

// span writes a duration the way people read it: the two largest units.
func span(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	days, d := d/(24*time.Hour), d%(24*time.Hour)
	hours, d := d/time.Hour, d%time.Hour
	mins := d / time.Minute
	switch {
	case days > 0 && hours > 0:
		return fmt.Sprintf("%dd %dh", days, hours)
	case days > 0:
		return fmt.Sprintf("%dd", days)
	case hours > 0 && mins > 0:
		return fmt.Sprintf("%dh %dm", hours, mins)
	case hours > 0:
		return fmt.Sprintf("%dh", hours)
	}
	return fmt.Sprintf("%dm", mins)
}

// group writes n with thin spaces between thousands: 1 000 000.
func group(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u202f")
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// certStatus is how a certificate stands at now: active, expired or
// revoked.
func certStatus(c store.Certificate, now time.Time) string {
	switch {
	case c.Status == store.StatusRevoked:
		return "revoked"
	case now.After(c.NotAfter):
		return "expired"
	}
	return "active"
}
