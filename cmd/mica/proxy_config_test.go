package main

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/proxy"
	"github.com/mica-pki/mica/mtls"
)

func TestProxyConfig(t *testing.T) {
	const listeners = `
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8444
    backend: http://127.0.0.1:8080
    allow: {trust_domains: [example.org]}
    timeout: 5s
`
	cfg, err := parseProxyConfig([]byte("credentials: {dir: /srv/gw}\nrevocation: {feed: https://mica:8443}\n"+listeners), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics != defaultProxyMetrics || cfg.Listeners[0].Mode != proxy.Inbound || cfg.Listeners[0].Timeout.D() != 5*time.Second {
		t.Errorf("parsed %+v", cfg)
	}
	if u, host, err := feedURL(cfg.Revocation.Feed); u != "https://mica:8443/v1/revocations/feed" || host != "mica" || err != nil {
		t.Errorf("feed URL %q, host %q, %v", u, host, err)
	}

	// The CRL policy and the pins: soft-fail and no pins unless said.
	if cfg.crlPolicy != mtls.CRLSoftFail || cfg.pins != nil {
		t.Errorf("defaults: CRL policy %v, pins %v", cfg.crlPolicy, cfg.pins)
	}
	pin := mtls.SPKIPin(sha256.Sum256([]byte("a CA's SubjectPublicKeyInfo")))
	cfg, err = parseProxyConfig([]byte(fmt.Sprintf(`credentials: {dir: /srv/gw}
revocation: {feed: https://mica:8443, crl_urls: [http://mica:8080/crl/root.crl], crl_policy: hard-fail, crl_wait: 5s}
pinned_cas: [%s]
`, pin)+listeners), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.crlPolicy != mtls.CRLHardFail || cfg.Revocation.CRLWait.D() != 5*time.Second || len(cfg.pins) != 1 || cfg.pins[0] != pin {
		t.Errorf("CRL policy %v, wait %v, pins %v; want hard-fail, 5s, [%s]", cfg.crlPolicy, cfg.Revocation.CRLWait.D(), cfg.pins, pin)
	}

	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "credentials: {dir: /x}\nrevocation: {disabled: true}\nlistner: []\n", "field listner not found"},
		{"unknown listener field", "credentials: {dir: /x}\nrevocation: {disabled: true}\nlisteners: [{name: a, backnd: x}]\n", "field backnd not found"},
		{"duration without unit", "credentials: {dir: /x}\nrevocation: {disabled: true}\ndrain_timeout: 30\n" + listeners, "write durations with a unit"},
		{"no credentials", "revocation: {disabled: true}\n" + listeners, "exactly one of dir"},
		{"two credentials", "credentials: {dir: /x, workload_api: unix:///s}\nrevocation: {disabled: true}\n" + listeners, "exactly one of dir"},
		{"bad feed credentials", "credentials: {dir: /x}\nrevocation: {feed: https://m, feed_credentials: {}}\n" + listeners, "feed_credentials"},
		{"no revocation", "credentials: {dir: /x}\n" + listeners, "disabled: true to accept revoked"},
		{"disabled and feed", "credentials: {dir: /x}\nrevocation: {disabled: true, feed: https://m}\n" + listeners, "choose one"},
		{"feed over http", "credentials: {dir: /x}\nrevocation: {feed: http://m:8080}\n" + listeners, "https:// URL"},
		{"no listeners", "credentials: {dir: /x}\nrevocation: {disabled: true}\n", "no listeners"},
		{"unknown CRL policy", "credentials: {dir: /x}\nrevocation: {crl_urls: [http://m/r.crl], crl_policy: hardfail}\n" + listeners, `crl_policy "hardfail": use soft-fail`},
		{"hard-fail without CRLs", "credentials: {dir: /x}\nrevocation: {feed: https://m, crl_policy: hard-fail}\n" + listeners, "hard-fail needs crl_urls"},
		{"hard-fail, revocation disabled", "credentials: {dir: /x}\nrevocation: {disabled: true, crl_policy: hard-fail}\n" + listeners, "hard-fail needs crl_urls"},
		{"crl_wait without hard-fail", "credentials: {dir: /x}\nrevocation: {crl_urls: [http://m/r.crl], crl_wait: 5s}\n" + listeners, "set crl_policy: hard-fail"},
		{"crl_wait too long", "credentials: {dir: /x}\nrevocation: {crl_urls: [http://m/r.crl], crl_policy: hard-fail, crl_wait: 1h}\n" + listeners, "between 0 and 30s"},
		{"crl_wait negative", "credentials: {dir: /x}\nrevocation: {crl_urls: [http://m/r.crl], crl_policy: hard-fail, crl_wait: -1s}\n" + listeners, "crl_wait"},
		{"pin without algorithm", "credentials: {dir: /x}\nrevocation: {disabled: true}\npinned_cas: [" + pin.String()[len("sha256/"):] + "]\n" + listeners, "pinned_cas: entry 1"},
		{"pin of the wrong length", "credentials: {dir: /x}\nrevocation: {disabled: true}\npinned_cas: [" + pin.String() + ", sha256/AAAA]\n" + listeners, "pinned_cas: entry 2"},
		{"pin not a list", "credentials: {dir: /x}\nrevocation: {disabled: true}\npinned_cas: " + pin.String() + "\n" + listeners, "line 3: cannot unmarshal"},
		{"bad listener", "credentials: {dir: /x}\nrevocation: {disabled: true}\nlisteners: [{name: a, mode: inbound, listen: ':1', backend: 'ftp://x'}]\n", "backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseProxyConfig([]byte(tt.yaml), "p.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "p.yaml") {
				t.Fatalf("error %v, want one naming p.yaml and containing %q", err, tt.want)
			}
		})
	}
}
