package policy

import (
	"github.com/mica-pki/mica/internal/duration"

	"os"
	"strings"
	"testing"
	"time"
)

func TestRunTestsExample(t *testing.T) {
	data, err := os.ReadFile("testdata/cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases, err := LoadTestCases(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range RunTests(exampleEngine(t), cases) {
		if !r.Pass {
			t.Errorf("%s: %s", r.Name, r.Message)
		}
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	e := exampleEngine(t)
	svc := TestRequest{Profile: "service", SPIFFEID: "spiffe://example.org/billing/api", Method: MethodToken, Source: "10.0.0.1"}
	tests := []struct {
		c        TestCase
		pass     bool
		got, msg string
	}{
		{TestCase{Name: "allow as expected", Request: svc, Want: "allow", TTL: duration.Duration(time.Hour)}, true, "allow", ""},
		{TestCase{Name: "wrong ttl", Request: svc, Want: "allow", TTL: duration.Duration(2 * time.Hour)}, false, "allow", "want allow with ttl 2h, got ttl 1h"},
		{TestCase{Name: "expected deny got allow", Request: svc, Want: "deny", Reason: ReasonRuleDenied}, false, "allow", "want deny (rule-denied), got allow"},
		{TestCase{Name: "deny any reason", Request: TestRequest{Profile: "nope"}, Want: "deny"}, true, "deny (unknown-profile)", ""},
		{TestCase{Name: "wrong reason", Request: TestRequest{Profile: "nope"}, Want: "deny", Reason: ReasonTTLTooLong}, false, "deny (unknown-profile)", "want deny (ttl-too-long), got deny (unknown-profile)"},
		{TestCase{Name: "expected allow got deny", Request: TestRequest{Profile: "nope"}, Want: "allow"}, false, "deny (unknown-profile)", "want allow, got deny (unknown-profile): policy: profile"},
		{TestCase{Name: "bad key", Request: TestRequest{Profile: "service", Key: "dsa"}, Want: "allow"}, false, "error", "the case cannot run: key: policy: key \"dsa\""},
		{TestCase{Name: "", Request: svc, Want: "allow"}, false, "error", "the case has no name"},
	}
	for _, tt := range tests {
		t.Run(tt.c.Name, func(t *testing.T) {
			r := RunTests(e, []TestCase{tt.c})[0]
			if r.Pass != tt.pass || r.Got != tt.got || !strings.Contains(r.Message, tt.msg) {
				t.Errorf("got pass=%v got=%q message=%q\nwant pass=%v got=%q message containing %q", r.Pass, r.Got, r.Message, tt.pass, tt.got, tt.msg)
			}
		})
	}
}

func TestLoadTestCasesErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", "", "the document is empty"},
		{"no cases", "cases: []\n", "has no cases"},
		{"unknown field", "cases:\n  - name: a\n    want: allow\n    request: {profile: p, spiffe: x}\n", "field spiffe not found"},
		{"bad want", "cases:\n  - name: a\n    want: yes\n    request: {profile: p}\n", `want is "yes": write want: allow or want: deny`},
		{"reason with allow", "cases:\n  - name: a\n    want: allow\n    reason: rule-denied\n    request: {profile: p}\n", "reason only goes with want: deny"},
		{"ttl with deny", "cases:\n  - name: a\n    want: deny\n    ttl: 1h\n    request: {profile: p}\n", "ttl only goes with want: allow"},
		{"bad spiffe id", "cases:\n  - name: a\n    want: allow\n    request: {profile: p, spiffe_id: 'http://x'}\n", `test case 1 ("a"): spiffe_id "http://x" is not a SPIFFE ID`},
		{"bad ip", "cases:\n  - name: a\n    want: allow\n    request: {profile: p, ips: [x]}\n", `ips: "x" is not an IP address`},
		{"bad source", "cases:\n  - name: a\n    want: allow\n    request: {profile: p, source: x}\n", `source: "x" is not an IP address`},
		{"bad key", "cases:\n  - name: a\n    want: allow\n    request: {profile: p, key: rsa-x}\n", `key "rsa-x" is not a known sample key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadTestCases([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSamplePublicKey(t *testing.T) {
	for kind, want := range map[string]string{
		"ecdsa-p256": "ecdsa-p256", "ecdsa-p384": "ecdsa-p384", "ecdsa-p521": "ecdsa-p521",
		"ed25519": "ed25519", "rsa-1024": "rsa-1024", "rsa-2048": "rsa-2048", "rsa-4096": "rsa-4096",
	} {
		t.Run(kind, func(t *testing.T) {
			k, err := classifyKey(mustKey(t, kind))
			if err != nil || k.String() != want {
				t.Errorf("classifyKey = %v, %v; want %s", k, err, want)
			}
		})
	}
	if k, err := SamplePublicKey("none"); k != nil || err != nil {
		t.Errorf("none = %v, %v", k, err)
	}
}
