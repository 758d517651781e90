package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracingConfig is the config file's tracing section. The zero value is
// tracing off.
type TracingConfig struct {
	// OTLPEndpoint is where spans are exported with OTLP over HTTP: a URL
	// (http://collector:4318, to which /v1/traces is added when it has no
	// path) or host:port (HTTPS unless Insecure). Empty means tracing is off. The exporter also honours the
	// standard OTEL_EXPORTER_OTLP_* variables for headers and timeouts.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of requests traced, 0 to 1; 0 means 1.
	// Requests whose caller sent a sampled trace context are traced
	// regardless (parent-based sampling).
	SampleRatio float64 `yaml:"sample_ratio"`
	// Insecure sends spans over plain HTTP to a host:port endpoint.
	Insecure bool `yaml:"insecure"`
}

// Validate checks the section; mica refuses to start on a bad one.
func (c TracingConfig) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("telemetry: tracing sample_ratio %v must be between 0 and 1 (0.1 traces one request in ten)", c.SampleRatio)
	}
	if c.OTLPEndpoint == "" {
		return nil
	}
	if strings.Contains(c.OTLPEndpoint, "://") {
		u, err := url.Parse(c.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("telemetry: tracing otlp_endpoint %q must be an http(s):// URL or host:port, such as http://127.0.0.1:4318", c.OTLPEndpoint)
		}
	}
	return nil
}

// Tracing is the process's tracer provider: a no-op one when tracing is
// off (no exporter, no goroutine, nothing recorded), an OTLP-exporting SDK
// provider when it is on.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when off
}

// NewTracing sets tracing up as cfg says. service and version name this
// process in the exported spans.
func NewTracing(ctx context.Context, cfg TracingConfig, service, version string) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.OTLPEndpoint == "" {
		return &Tracing{provider: noop.NewTracerProvider()}, nil
	}
	var opts []otlptracehttp.Option
	if strings.Contains(cfg.OTLPEndpoint, "://") {
		// A bare collector URL gets the standard traces path, as
		// OTEL_EXPORTER_OTLP_ENDPOINT does; a URL with a path is used as is.
		u, _ := url.Parse(cfg.OTLPEndpoint) // checked by Validate
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	} else {
		opts = append(opts, otlptracehttp.WithEndpoint(cfg.OTLPEndpoint))
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter for %s: %w", cfg.OTLPEndpoint, err)
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service), semconv.ServiceVersion(version))
	return &Tracing{sdk: sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)}, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// Provider is the tracer provider, for instrumentation libraries.
func (t *Tracing) Provider() trace.TracerProvider {
	if t.sdk != nil {
		return t.sdk
	}
	return t.provider
}

// Tracer is a named tracer of the provider.
func (t *Tracing) Tracer(name string) trace.Tracer { return t.Provider().Tracer(name) }

// Propagator reads and writes W3C trace context and baggage headers, so a
// caller's trace continues into mica.
func (t *Tracing) Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Shutdown exports the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}
