package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/mica-pki/mica/internal/acme"
)

// withACME mounts the ACME door under /acme/ in front of the API when the
// config has an acme section; otherwise it returns api unchanged.
func withACME(p *parts, cfg *Config, api http.Handler, log *slog.Logger) (http.Handler, error) {
	if cfg.ACME == nil {
		return api, nil
	}
	st, ok := p.store.(acme.Store)
	if !ok {
		return nil, fmt.Errorf("acme: the %T store cannot keep ACME state", p.store)
	}
	srv, err := acme.New(acme.Config{Authority: p.authority, Store: st, Settings: *cfg.ACME, Logger: log,
		SharedLimits: p.rateLimitBackend()})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(acme.Prefix, srv.Handler())
	mux.Handle("/", api)
	return mux, nil
}
