package authority

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/mica-pki/mica/internal/policy"
)

// Observer is told how each issuance and revocation ended, so that metrics
// can count them without the core knowing any metrics library. Its methods
// run on the request path: they must be cheap and must not block.
type Observer interface {
	ObserveIssuance(IssuanceResult)
	// ObserveRevocations is told of count certificates revoked with the
	// RFC 5280 reason code reason, after they committed.
	ObserveRevocations(reason, count int)
}

// Outcomes of an issuance request, as IssuanceResult.Outcome says them.
const (
	OutcomeIssued  = "issued"
	OutcomeRefused = "refused" // the request was not acceptable: see Reason
	OutcomeError   = "error"   // the server failed (KindInternal)
)

// IssuanceResult is one issuance request as metrics see it. It holds no
// identity, serial or anything else per certificate.
type IssuanceResult struct {
	// Door is the front door: token (enrollment), renew, acme or internal.
	Door policy.Method
	// Profile is the profile the request asked for, once known from an
	// authenticated source; empty before that (a bad token). It may name a
	// profile the config does not have: observers must bound it.
	Profile string
	// Outcome is OutcomeIssued, OutcomeRefused or OutcomeError.
	Outcome string
	// Reason is the refusal's slug (Error.Outcome); empty when issued.
	Reason   string
	Duration time.Duration
}

// Span and attribute names of the issuance pipeline's traces. Attributes
// never carry a token, a key, a CSR or anything else secret.
const (
	spanAuthenticate = "authority.authenticate"
	spanDecide       = "policy.decide"
	spanLint         = "issuance.lint"
	spanSign         = "issuance.sign"
	spanCommit       = "store.commit"

	attrDoor    = attribute.Key("mica.door")
	attrProfile = attribute.Key("mica.profile")
	attrOutcome = attribute.Key("mica.outcome")
	attrReason  = attribute.Key("mica.reason")
	attrSerial  = attribute.Key("mica.serial")
)

// noopTracer is the tracer when none is configured: no exporter, no
// goroutine, nothing recorded.
var noopTracer = noop.NewTracerProvider().Tracer("")

// tracked is one issuance request being timed and traced.
type tracked struct {
	a       *Authority
	span    trace.Span
	start   time.Time
	door    policy.Method
	profile string
}

// track starts the request's span; end finishes it and tells the observer.
func (a *Authority) track(ctx context.Context, name string, door policy.Method) (context.Context, *tracked) {
	ctx, span := a.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	return ctx, &tracked{a: a, span: span, start: time.Now(), door: door}
}

func (t *tracked) end(iss *Issued, err error) {
	r := IssuanceResult{Door: t.door, Profile: t.profile, Outcome: OutcomeIssued, Duration: time.Since(t.start)}
	if err != nil {
		r.Outcome, r.Reason = OutcomeRefused, KindInternal.String()
		if e, ok := err.(*Error); ok {
			r.Reason = e.Outcome()
			if e.Kind == KindInternal {
				r.Outcome = OutcomeError
			}
		} else {
			r.Outcome = OutcomeError
		}
	}
	if t.a.observer != nil {
		t.a.observer.ObserveIssuance(r)
	}
	if t.span.IsRecording() {
		t.span.SetAttributes(attrDoor.String(string(r.Door)), attrProfile.String(r.Profile), attrOutcome.String(r.Outcome))
		if err != nil {
			t.span.SetAttributes(attrReason.String(r.Reason))
			t.span.SetStatus(codes.Error, r.Reason)
		} else {
			t.span.SetAttributes(attrSerial.String(iss.Record.Serial))
		}
	}
	t.span.End()
}

// step runs fn in a child span named name, marking the span failed when fn
// fails. The error text is not recorded (it may quote the request); the
// request's span carries the refusal's slug.
func step[T any](ctx context.Context, a *Authority, name string, fn func(context.Context) (T, error)) (T, error) {
	ctx, span := a.tracer.Start(ctx, name)
	v, err := fn(ctx)
	if err != nil {
		span.SetStatus(codes.Error, "")
	}
	span.End()
	return v, err
}
