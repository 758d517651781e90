package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"github.com/mica-pki/mica/internal/acme"
)

// withACME mounts the ACME door under /acme/ in front of the API when the
// config has an acme section; otherwise it returns api unchanged and a nil
// door. apiAddr is the address the API listener is bound to: the door's
// public URL defaults to https://<first server name>:<its port>/acme/.
func withACME(p *parts, cfg *Config, api http.Handler, apiAddr net.Addr, log *slog.Logger) (http.Handler, *acme.Server, error) {
	if cfg.ACME == nil {
		return api, nil, nil
	}
	st, ok := p.store.(acme.Store)
	if !ok {
		return nil, nil, fmt.Errorf("acme: the %T store cannot keep ACME state", p.store)
	}
	set := *cfg.ACME
	if set.URL == "" {
		set.URL = defaultACMEURL(cfg.ServerNames, apiAddr)
	}
	srv, err := acme.New(acme.Config{Authority: p.authority, Store: st, Settings: set, Logger: log,
		SharedLimits: p.rateLimitBackend()})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(acme.Prefix, srv.Handler())
	mux.Handle("/", api)
	return mux, srv, nil
}

// defaultACMEURL names the API by its first server name (which its TLS
// certificate carries) and the port it listens on.
func defaultACMEURL(serverNames []string, apiAddr net.Addr) string {
	port := 443
	if tcp, ok := apiAddr.(*net.TCPAddr); ok {
		port = tcp.Port
	}
	host := "localhost"
	if len(serverNames) > 0 {
		host = serverNames[0]
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(port)) + acme.Prefix
}
