package telemetry

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxRoutes bounds the route label: mica registers a few dozen patterns,
// and anything past this many is counted as "other".
const maxRoutes = 100

// RouteOther is the route of a request no pattern matched.
const RouteOther = "other"

// HTTPMetrics count every request a listener answers, by the route pattern
// that matched it (as registered on an http.ServeMux, e.g. "POST
// /v1/certificates") and the status code, so that requests refused before
// they reach the authority (a malformed body, an unknown path, an
// unauthenticated call) are counted too.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	mu     sync.Mutex
	routes map[string]bool
}

// NewHTTPMetrics registers mica_http_requests_total{listener,route,code}
// and mica_http_request_duration_seconds{listener,route} with reg.
func NewHTTPMetrics(reg prometheus.Registerer) (*HTTPMetrics, error) {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mica_http_requests_total",
			Help: "HTTP requests answered, by listener (api, revocation), route pattern and status code.",
		}, []string{"listener", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mica_http_request_duration_seconds",
			Help:    "Time from a request's headers to the end of its response, by listener and route pattern (feed streams count their whole life).",
			Buckets: latencyBuckets,
		}, []string{"listener", "route"}),
		routes: map[string]bool{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Wrap counts the requests h answers under the listener's name. h must set
// the request's Pattern (http.ServeMux does) on the *http.Request it is
// given; Wrap must therefore sit inside anything that copies the request
// (such as an OpenTelemetry handler).
func (m *HTTPMetrics) Wrap(listener string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			route := m.route(r.Pattern)
			m.requests.WithLabelValues(listener, route, codeLabel(sw.status())).Inc()
			m.duration.WithLabelValues(listener, route).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
}

func (m *HTTPMetrics) route(pattern string) string {
	if pattern == "" {
		return RouteOther
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.routes[pattern] {
		if len(m.routes) >= maxRoutes {
			return RouteOther
		}
		m.routes[pattern] = true
	}
	return pattern
}

func codeLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK // nothing written: net/http answers 200
	}
	return w.code
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flush, write
// deadlines), as the revocation feed's stream needs.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it.
func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }
