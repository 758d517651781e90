package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkSpan is the cost of one span as the authority makes them (start,
// a few attributes when recording, end): with tracing off, sampled into the
// SDK's batch processor (export discarded), and not sampled.
func BenchmarkSpan(b *testing.B) {
	providers := []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"Off", noop.NewTracerProvider()},
		{"Sampled", sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))},
		{"NotSampled", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))},
	}
	for _, p := range providers {
		b.Run(p.name, func(b *testing.B) {
			tr := p.tp.Tracer("bench")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, span := tr.Start(ctx, "policy.decide")
				if span.IsRecording() {
					span.SetAttributes(attribute.String("mica.door", "token"), attribute.String("mica.profile", "service"))
				}
				span.End()
			}
		})
	}
}
