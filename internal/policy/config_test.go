package policy

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigExample(t *testing.T) {
	data, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	svc := cfg.Profiles["service"]
	if cfg.TrustDomain != "example.org" || svc.DefaultTTL.D() != time.Hour || svc.MaxTTL.D() != 24*time.Hour ||
		svc.MinRSABits != 2048 || len(svc.Networks) != 1 || !strings.Contains(svc.Rule, "renew") {
		t.Errorf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", "", "the document is empty"},
		{"misspelt field", "trust_domain: example.org\nprofiles:\n  a:\n    spife: [\"/x\"]\n", "field spife not found"},
		{"misspelt top-level field", "trustdomain: example.org\n", "field trustdomain not found"},
		{"duration without unit", "profiles:\n  a:\n    max_ttl: 3600\n", "write durations with a unit"},
		{"bad duration", "profiles:\n  a:\n    max_ttl: 1 day\n", "write durations with a unit"},
		{"two documents", "trust_domain: a.org\n---\ntrust_domain: b.org\n", "more than one YAML document"},
		{"duplicate profile", "profiles:\n  a:\n    dns: [a.org]\n  a:\n    dns: [b.org]\n", "already defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every one must appear
	}{
		{"no profiles", "trust_domain: example.org\n", []string{"policy: the config has no profiles"}},
		{"bad trust domain", "trust_domain: Example.ORG\nprofiles:\n  a:\n    dns: [a.org]\n",
			[]string{`policy: trust_domain "Example.ORG" is not a valid SPIFFE trust domain`, "lower-case"}},
		{"spiffe without trust domain", "profiles:\n  a:\n    spiffe: [/x]\n",
			[]string{`policy: profile "a": spiffe: the profile allows SPIFFE IDs but the config has no trust_domain`}},
		{"bad profile name", "profiles:\n  Bad Name:\n    dns: [a.org]\n", []string{`profile "Bad Name": name: use 1-63 lower-case`}},
		{"no identities", "profiles:\n  a:\n    max_ttl: 1h\n", []string{`profile "a": spiffe, dns, ips: the profile allows no identity`}},
		{"bad spiffe glob", "trust_domain: example.org\nprofiles:\n  a:\n    spiffe: [/billing/]\n",
			[]string{`profile "a": spiffe: "/billing/": remove the trailing /`}},
		{"full spiffe id as glob", "trust_domain: example.org\nprofiles:\n  a:\n    spiffe: [\"spiffe://example.org/x\"]\n",
			[]string{"write only the path under the trust domain"}},
		{"bad dns", "profiles:\n  a:\n    dns: [\"*\"]\n", []string{`profile "a": dns: "*": the pattern has no fixed label`}},
		{"bad ip", "profiles:\n  a:\n    ips: [10.0.0.1/8]\n", []string{`profile "a": ips: "10.0.0.1/8" has bits set`, "did you mean 10.0.0.0/8?"}},
		{"bad network", "profiles:\n  a:\n    dns: [a.org]\n    networks: [lan]\n", []string{`profile "a": networks: "lan" is not an IP address or CIDR`}},
		{"bad expected network", "profiles:\n  a:\n    dns: [a.org]\n    expected_networks: [office]\n", []string{`profile "a": expected_networks: "office" is not an IP address or CIDR`}},
		{"negative max_ttl", "profiles:\n  a:\n    dns: [a.org]\n    max_ttl: -1h\n", []string{`profile "a": max_ttl: -1h0m0s is negative`}},
		{"tiny max_ttl", "profiles:\n  a:\n    dns: [a.org]\n    max_ttl: 5ms\n", []string{`profile "a": max_ttl: 5ms is shorter than a second`}},
		{"negative default_ttl", "profiles:\n  a:\n    dns: [a.org]\n    default_ttl: -1h\n", []string{`profile "a": default_ttl: -1h0m0s is negative`}},
		{"default over max", "profiles:\n  a:\n    dns: [a.org]\n    default_ttl: 48h\n", []string{`profile "a": default_ttl: 2d is longer than max_ttl 24h: lower default_ttl or raise max_ttl`}},
		{"unknown key type", "profiles:\n  a:\n    dns: [a.org]\n    key_types: [dsa]\n", []string{`profile "a": key_types: "dsa" is not a key type: use ecdsa-p256`}},
		{"rsa with size", "profiles:\n  a:\n    dns: [a.org]\n    key_types: [rsa-2048]\n", []string{`key_types: "rsa-2048": write rsa and set the smallest size with min_rsa_bits`}},
		{"duplicate key type", "profiles:\n  a:\n    dns: [a.org]\n    key_types: [ed25519, ed25519]\n", []string{`"ed25519" is listed twice`}},
		{"rsa-1024 floor", "profiles:\n  a:\n    dns: [a.org]\n    key_types: [rsa]\n    min_rsa_bits: 1024\n", []string{`profile "a": min_rsa_bits: 1024 is below the floor of 2048`}},
		{"min_rsa_bits without rsa", "profiles:\n  a:\n    dns: [a.org]\n    min_rsa_bits: 3072\n", []string{`profile "a": min_rsa_bits: is set but key_types does not allow rsa`}},
		{"unknown eku", "profiles:\n  a:\n    dns: [a.org]\n    ext_key_usage: [codeSigning]\n", []string{`profile "a": ext_key_usage: "codeSigning" is not supported`}},
		{"duplicate eku", "profiles:\n  a:\n    dns: [a.org]\n    ext_key_usage: [clientAuth, clientAuth]\n", []string{`"clientAuth" is listed twice`}},
		{"rule syntax error", "profiles:\n  a:\n    dns: [a.org]\n    rule: 'request.method =='\n", []string{`profile "a": rule: does not compile:`, "Syntax error"}},
		{"rule misspelt field", "profiles:\n  a:\n    dns: [a.org]\n    rule: 'request.methd == \"renew\"'\n", []string{`profile "a": rule: does not compile:`, "methd"}},
		{"rule type mismatch", "profiles:\n  a:\n    dns: [a.org]\n    rule: 'request.ttl_seconds > \"1h\"'\n", []string{`profile "a": rule: does not compile:`, "no matching overload"}},
		{"rule unknown variable", "profiles:\n  a:\n    dns: [a.org]\n    rule: 'req.method == \"renew\"'\n", []string{"undeclared reference to 'req'"}},
		{"rule not bool", "profiles:\n  a:\n    dns: [a.org]\n    rule: 'request.method'\n", []string{`profile "a": rule: is of type string but must be true or false`}},
		{"rule dyn", "profiles:\n  a:\n    dns: [a.org]\n    rule: 'dyn(true)'\n", []string{`is of type dyn but must be true or false`}},
		{"every error at once", "profiles:\n  a:\n    dns: [\"*\"]\n  b:\n    ips: [bad]\n    max_ttl: -1s\n",
			[]string{`profile "a": dns:`, `profile "b": ips:`, `profile "b": max_ttl:`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			err = cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, "policy:") && line != strings.ToLower(line[:8])+line[8:] {
					t.Errorf("error line %q does not start in lower case", line)
				}
			}
			if _, err := New(cfg); err == nil {
				t.Error("New accepted a config Validate refused")
			}
		})
	}
}
