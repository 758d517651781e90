package policy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/strictyaml"
)

// TestFile is a file of sample requests with the answers the policy should
// give, kept next to the config so a policy change shows its effect in
// review. See testdata/cases.yaml.
type TestFile struct {
	Cases []TestCase `yaml:"cases"`
}

// TestCase is one sample request and its expected answer.
type TestCase struct {
	Name    string      `yaml:"name"`
	Request TestRequest `yaml:"request"`
	// Want is "allow" or "deny".
	Want string `yaml:"want"`
	// Reason, with deny, is the expected Reason; any reason when empty.
	Reason Reason `yaml:"reason,omitempty"`
	// TTL, with allow, is the expected decided TTL; not checked when zero.
	TTL duration.Duration `yaml:"ttl,omitempty"`
}

// TestRequest is a Request written as text.
type TestRequest struct {
	Profile  string            `yaml:"profile"`
	SPIFFEID string            `yaml:"spiffe_id,omitempty"`
	DNS      []string          `yaml:"dns,omitempty"`
	IPs      []string          `yaml:"ips,omitempty"`
	TTL      duration.Duration `yaml:"ttl,omitempty"`
	// Key is a key kind: ecdsa-p256 (the default), ecdsa-p384, ecdsa-p521,
	// ed25519, rsa-BITS (rsa-2048, rsa-1024, ...) or none.
	Key       string `yaml:"key,omitempty"`
	Method    Method `yaml:"method,omitempty"`
	Requester string `yaml:"requester,omitempty"`
	Source    string `yaml:"source,omitempty"`
}

// TestResult is the outcome of one TestCase.
type TestResult struct {
	Name     string
	Pass     bool
	Got      string   // "allow" or "deny (reason)", for printing
	Decision Decision // when allowed
	Err      error    // what Decide returned, or why the case could not run
	Message  string   // when failed: what was expected and what happened
}

// LoadTestCases reads a YAML test file, refusing unknown fields and cases
// that could never run, so a typo in the file is not a silent pass.
func LoadTestCases(data []byte) ([]TestCase, error) {
	var f TestFile
	if err := strictyaml.Decode(data, &f); err != nil {
		return nil, fmt.Errorf("policy: reading test cases: %w", err)
	}
	if len(f.Cases) == 0 {
		return nil, errors.New("policy: the test file has no cases (list them under a cases key)")
	}
	var errs []error
	for i, c := range f.Cases {
		if err := c.check(); err != nil {
			errs = append(errs, fmt.Errorf("policy: test case %d (%q): %w", i+1, c.Name, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f.Cases, nil
}

func (c TestCase) check() error {
	switch {
	case c.Name == "":
		return errors.New("the case has no name (add a name field)")
	case c.Want != "allow" && c.Want != "deny":
		return fmt.Errorf("want is %q: write want: allow or want: deny", c.Want)
	case c.Want == "allow" && c.Reason != "":
		return errors.New("reason only goes with want: deny")
	case c.Want == "deny" && c.TTL != 0:
		return errors.New("ttl only goes with want: allow")
	}
	_, err := c.Request.Request()
	return err
}

// Request builds the Request a test case describes. Names are passed on as
// written (not normalized), so cases can probe how policy treats them.
func (tr TestRequest) Request() (Request, error) {
	r := Request{Profile: tr.Profile, TTL: tr.TTL.D(), Method: tr.Method, Requester: tr.Requester}
	if tr.SPIFFEID != "" {
		id, err := spiffeid.FromString(tr.SPIFFEID)
		if err != nil {
			return Request{}, fmt.Errorf("spiffe_id %q is not a SPIFFE ID: %v", tr.SPIFFEID, err)
		}
		r.Identity.SPIFFE = id
	}
	r.Identity.DNS = tr.DNS
	for _, s := range tr.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Request{}, fmt.Errorf("ips: %q is not an IP address", s)
		}
		r.Identity.IPs = append(r.Identity.IPs, a)
	}
	if tr.Source != "" {
		a, err := netip.ParseAddr(tr.Source)
		if err != nil {
			return Request{}, fmt.Errorf("source: %q is not an IP address", tr.Source)
		}
		r.Source = a
	}
	kind := tr.Key
	if kind == "" {
		kind = KeyECDSAP256
	}
	pub, err := SamplePublicKey(kind)
	if err != nil {
		return Request{}, fmt.Errorf("key: %w", err)
	}
	r.PublicKey = pub
	return r, nil
}

// RunTests decides every case and compares the answer with the
// expectation. It stops at nothing: each case gets a result.
func RunTests(e *Engine, cases []TestCase) []TestResult {
	out := make([]TestResult, 0, len(cases))
	for _, c := range cases {
		out = append(out, runTest(e, c))
	}
	return out
}

func runTest(e *Engine, c TestCase) TestResult {
	res := TestResult{Name: c.Name}
	if err := c.check(); err != nil {
		res.Err, res.Got, res.Message = err, "error", "the case cannot run: "+err.Error()
		return res
	}
	req, _ := c.Request.Request() // checked above
	dec, err := e.Decide(req)
	res.Decision, res.Err = dec, err
	var denied *DeniedError
	switch {
	case err == nil:
		res.Got = "allow"
	case errors.As(err, &denied):
		res.Got = "deny (" + string(denied.Reason) + ")"
	default:
		res.Got, res.Message = "error", "policy failed: "+err.Error()
		return res
	}
	switch c.Want {
	case "allow":
		switch {
		case err != nil:
			res.Message = "want allow, got " + res.Got + ": " + err.Error()
		case c.TTL != 0 && dec.TTL != c.TTL.D():
			res.Message = fmt.Sprintf("want allow with ttl %s, got ttl %s", c.TTL, duration.Format(dec.TTL))
		default:
			res.Pass = true
		}
	case "deny":
		switch {
		case err == nil:
			res.Message = "want deny"
			if c.Reason != "" {
				res.Message += " (" + string(c.Reason) + ")"
			}
			res.Message += ", got allow"
		case c.Reason != "" && denied.Reason != c.Reason:
			res.Message = "want deny (" + string(c.Reason) + "), got " + res.Got + ": " + err.Error()
		default:
			res.Pass = true
		}
	}
	return res
}
