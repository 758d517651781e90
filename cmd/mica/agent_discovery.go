package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/discover/filescan"
	"github.com/mica-pki/mica/internal/discover/tlsscan"
	"github.com/mica-pki/mica/internal/duration"
)

// agentDiscovery is the agent config's discovery section: scan this host's
// files and endpoints every interval and report what is found over mTLS,
// with the agent's own certificate (its profile must be one the server's
// discovery.agent_profiles lists).
type agentDiscovery struct {
	// Interval between scans; default 6h. The first scan runs at start.
	Interval string `yaml:"interval"`
	// Paths are directories (or files) to scan.
	Paths []string `yaml:"paths"`
	// Endpoints are hosts, networks or host:port to probe, on Ports.
	Endpoints []string `yaml:"endpoints"`
	Ports     string   `yaml:"ports"`
	// PassphrasesFile lists passphrases for PKCS#12 files and keystores.
	PassphrasesFile string `yaml:"passphrases_file"`
	// Host is this host's name as the inventory records it; the system's
	// host name by default.
	Host string `yaml:"host"`
}

// runAgentDiscovery scans and reports every interval until ctx ends. A
// failed scan is logged and tried again at the next interval: it never
// stops the agent.
func runAgentDiscovery(ctx context.Context, c *client.Client, cfg agentDiscovery, log *slog.Logger) error {
	every := 6 * time.Hour
	if cfg.Interval != "" {
		d, err := duration.Parse(cfg.Interval)
		if err != nil || d < time.Minute {
			return fmt.Errorf("discovery: interval %q must be a duration of at least 1m, like 6h", cfg.Interval)
		}
		every = d
	}
	spec := tlsscan.Spec{Hosts: cfg.Endpoints}
	ports := cfg.Ports
	if ports == "" {
		ports = "443"
	}
	var err error
	if spec.Ports, err = tlsscan.ParsePorts(ports); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	if len(spec.Hosts) > 0 {
		if _, err := spec.Count(); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	fcfg := filescan.Config{Problem: func(p filescan.Problem) {
		log.Warn("discovery: a file could not be read", slog.String("path", p.Path), slog.String("error", p.Err.Error()))
	}}
	if cfg.PassphrasesFile != "" {
		if fcfg.Passphrases, err = filescan.ReadPassphrases(cfg.PassphrasesFile); err != nil {
			return err
		}
	}
	host, hostNames, err := thisHost(cfg.Host)
	if err != nil {
		return err
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rep := newReporter(c, newScanID())
		rep.host, rep.hostNames = host, hostNames
		started := time.Now()
		var errs []error
		if len(cfg.Paths) > 0 {
			if _, err := runFileScan(ctx, rep, cfg.Paths, fcfg); err != nil {
				errs = append(errs, err)
			}
		}
		if len(spec.Hosts) > 0 {
			st := &scanState{scanID: rep.scanID, done: map[string]bool{}}
			if _, _, err := runTLSScan(ctx, rep, spec, tlsscan.Config{Concurrency: 16}, st, &progress{}); err != nil {
				errs = append(errs, err)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if len(errs) > 0 {
			log.Warn("discovery scan failed; trying again at the next interval", slog.Any("errors", errs), slog.Duration("interval", every))
		} else {
			log.Info("discovery scan reported", slog.Int("sightings", rep.sum.Sightings), slog.Int("new", rep.sum.New),
				slog.Int("gone", rep.sum.Gone), slog.Duration("took", time.Since(started).Round(time.Millisecond)))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
