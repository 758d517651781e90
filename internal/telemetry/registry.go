package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry of the caller's own, never the global
// default, holding the Go runtime and process collectors and
// mica_build_info.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mica_build_info", Help: "Always 1; the version label says which mica is running.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }))
	return reg
}

// Handler serves reg at /metrics in the Prometheus text and OpenMetrics
// formats. A collector that fails is reported in the log and the rest is
// served, so one broken source does not blind the whole scrape.
func Handler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(logger(log).Handler(), slog.LevelWarn),
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	}))
	return mux
}

// Server is the plain-HTTP /metrics listener.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Disabled reports whether a metrics_listen setting turns the listener off.
func Disabled(addr string) bool { return addr == "" || addr == "off" }

// Listen opens the metrics listener on addr (nil, nil when Disabled). An
// address beyond loopback is allowed, with a warning: metrics say how many
// certificates of which profile exist, which is not for everyone.
func Listen(addr string, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	if Disabled(addr) {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: cannot listen for metrics on %s: %w (choose another address, or off)", addr, err)
	}
	if host, _, _ := net.SplitHostPort(addr); host != "localhost" && !net.ParseIP(host).IsLoopback() {
		logger(log).Warn("metrics are served beyond loopback", slog.String("address", addr))
	}
	return &Server{ln: ln, srv: &http.Server{Handler: Handler(reg, log), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(logger(log).Handler(), slog.LevelWarn)}}, nil
}

// Addr is the address the listener got (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.srv.Close()
	}()
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("telemetry: metrics listener: %w", err)
	}
	return nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
