package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAgentConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(`server: https://ca.internal:8443
out: /var/lib/mica-agent
owner: "101:102"
bundle_interval: 1m
reload:
  pid_file: /run/nginx.pid
  signal: USR1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	file, err := loadAgentConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	merged := mergeAgentConfig(file, agentConfig{agentIdentity: agentIdentity{Out: "/srv/creds"}})
	ids, err := merged.identities()
	if err != nil || len(ids) != 1 {
		t.Fatalf("identities = %+v, %v", ids, err)
	}
	opts, err := ids[0].agentOptions()
	if err != nil {
		t.Fatal(err)
	}
	interval, err := merged.bundleInterval()
	if merged.Server != "https://ca.internal:8443" || opts.Dir.Path != "/srv/creds" || opts.Dir.Owner == nil || opts.Dir.Owner.UID != 101 || opts.Dir.Owner.GID != 102 ||
		interval != time.Minute || err != nil || len(opts.Hooks) != 1 {
		t.Errorf("merged config = %+v, options = %+v", merged, opts)
	}

	if err := os.WriteFile(cfgPath, []byte(`server: https://ca.internal:8443
ttl: 1h
identities:
  - {out: /srv/a, uids: [1000]}
  - {out: /srv/b, gids: [33], ttl: 10m}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	file, err = loadAgentConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err = file.identities(); err != nil || len(ids) != 2 || ids[0].TTL != "1h" || ids[1].TTL != "10m" || ids[0].UIDs[0] != 1000 {
		t.Errorf("identities = %+v, %v", ids, err)
	}
	if _, err := mergeAgentConfig(file, agentConfig{agentIdentity: agentIdentity{Out: "/x"}}).identities(); err == nil {
		t.Error("--out accepted next to a list of identities")
	}

	if err := os.WriteFile(cfgPath, []byte("server: x\nsocket_path: y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAgentConfig(cfgPath); err == nil {
		t.Error("unknown field accepted")
	}

	bad := []struct {
		name string
		cfg  agentIdentity
	}{
		{"owner not numeric", agentIdentity{Owner: "nginx"}},
		{"group not numeric", agentIdentity{Owner: "101:www"}},
		{"key type", agentIdentity{KeyType: "dsa"}},
		{"signal", agentIdentity{Reload: agentReload{PIDFile: "/run/x.pid", Signal: "KILL"}}},
	}
	if _, err := (agentConfig{BundleInterval: "often"}).bundleInterval(); err == nil {
		t.Error("bundle interval \"often\" accepted")
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.cfg.agentOptions(); err == nil {
				t.Errorf("%+v accepted", tt.cfg)
			}
		})
	}
}
