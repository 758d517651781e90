#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then
# formatting, vet, staticcheck, the Prometheus alert rules and their unit
# tests, the tests on SQLite and PostgreSQL, and the race detector on the
# concurrent packages.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

step() { printf '\n== %s\n' "$*"; }

# retry runs a command that fetches from a package registry up to three
# times: a registry that fails for a moment must not fail the suite.
retry() {
  local n
  for n in 1 2 3; do
    "$@" && return 0
    echo "attempt $n of 3 failed: $*" >&2
    [ "$n" = 3 ] || sleep $((n * 10))
  done
  return 1
}

step "system packages"
need=()
command -v openssl >/dev/null || need+=(openssl)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v certbot >/dev/null || need+=(certbot)
command -v lego >/dev/null || need+=(lego)
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus) # promtool, and the server cmd/mica TestAlertsWithPrometheus runs
PATH="$PATH:/usr/sbin" command -v nginx >/dev/null || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v keytool >/dev/null || need+=(default-jre-headless)
command -v chromium >/dev/null || need+=(chromium) # the web console's browser tests (internal/web, cmd/mica TestConsole)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  retry $sudo apt-get update -qq
  retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "openssl: $(openssl version)"
echo "postgres: $(ls -d /usr/lib/postgresql/*/bin | head -1)"
echo "certbot: $(certbot --version 2>&1)"
echo "promtool: $(promtool --version 2>&1 | head -1)"
echo "prometheus: $(prometheus --version 2>&1 | head -1)"
echo "nginx: $(PATH="$PATH:/usr/sbin" nginx -v 2>&1)"
echo "curl: $(curl --version | head -1)"
echo "softhsm2: $(softhsm2-util --version 2>&1)"
echo "keytool: $(keytool -help 2>&1 | head -1)"
echo "chromium: $(chromium --version 2>&1 | head -1)"

step "Go modules"
retry go mod download
# staticcheck is built once here, where a registry hiccup is retried, and
# run below.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
retry env GOBIN="$tools" go install "$STATICCHECK"

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>&1 || true)
if [ -n "$unformatted" ]; then
  echo "these files need gofmt -w: $unformatted"
  exit 1
fi

step "go vet"
go vet ./...

step "build without cgo (PKCS#11 then says it needs cgo)"
CGO_ENABLED=0 go build ./...
CGO_ENABLED=0 go test -count=1 ./internal/keys/pkcs11/

step "staticcheck"
"$tools/staticcheck" ./...

step "alert rules (promtool)"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

step "tests (SQLite and PostgreSQL)"
go test -count=1 -timeout 15m ./...

step "race detector on the concurrent packages"
go test -race -count=1 -timeout 15m \
  ./internal/store/... ./internal/authority/... ./internal/api/... ./internal/token/... ./client/... \
  ./internal/feed/... ./internal/crl/... ./internal/ocsp/... ./revocation/... ./internal/auditlog/... \
  ./internal/agent/... ./internal/workloadapi/... ./internal/acme/... ./mtls/... ./internal/proxy/... ./internal/telemetry/... \
  ./internal/limits/... ./internal/ratelimit/... ./internal/lru/... ./internal/rotation/... ./internal/keys/...
