package authority

import (
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/strictyaml"
)

// PolicyDocument is the part of the config that says who may do what:
// the profiles and the governance part (admins, roles, approvals,
// privileged profiles, break-glass). It is what a policy version holds in
// the database; server settings (listeners, database, limits) stay in each
// server's file.
type PolicyDocument struct {
	Profiles   map[string]policy.ProfileConfig `yaml:"profiles"`
	Governance `yaml:",inline"`
}

// Marshal writes the document canonically (sorted keys, no comments), so
// that the same policy always has the same bytes and hash.
func (d PolicyDocument) Marshal() ([]byte, error) {
	out, err := yaml.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("authority: writing the policy document: %w", err)
	}
	return out, nil
}

// ParsePolicyDocument reads a document strictly (unknown fields are errors).
func ParsePolicyDocument(data []byte) (PolicyDocument, error) {
	var d PolicyDocument
	if err := strictyaml.Decode(data, &d); err != nil {
		return d, fmt.Errorf("authority: reading the policy document: %w", err)
	}
	return d, nil
}

// Compile checks the document against the server's trust domain and own
// names and compiles it: the profiles with mica's reserved ones added
// (WithReserved), the policy engine, and the access model. Every problem is
// reported.
func (d PolicyDocument) Compile(trustDomain string, serverNames []string) (CompiledPolicy, error) {
	cfg, err := WithReserved(policy.Config{TrustDomain: trustDomain, Profiles: d.Profiles}, serverNames)
	if err != nil {
		return CompiledPolicy{}, err
	}
	eng, err := policy.New(cfg)
	if err != nil {
		return CompiledPolicy{}, err
	}
	access, err := CompileAccess(d.Governance, trustDomain, slices.Sorted(func(yield func(string) bool) {
		for p := range cfg.Profiles {
			if !yield(p) {
				return
			}
		}
	}))
	if err != nil {
		return CompiledPolicy{}, err
	}
	return CompiledPolicy{Policy: eng, Access: access}, nil
}

// DocumentCompiler is the PolicyCompiler of a server with this trust
// domain and these names: it parses a stored document and compiles it.
func DocumentCompiler(trustDomain string, serverNames []string) PolicyCompiler {
	return func(data []byte) (CompiledPolicy, error) {
		d, err := ParsePolicyDocument(data)
		if err != nil {
			return CompiledPolicy{}, err
		}
		return d.Compile(trustDomain, serverNames)
	}
}
