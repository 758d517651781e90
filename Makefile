# `make test` is the whole suite, exactly as CI runs it. `make test-short`
# is the unit layer: nothing but Go (no PostgreSQL, no built binary, no
# openssl, nginx, certbot, lego, prometheus…), in about a minute.
.PHONY: test test-short build run bench

test:
	bash scripts/test.sh

test-short:
	go test -short ./...

build:
	go build -o bin/mica ./cmd/mica

run:
	go run ./cmd/mica serve --dev

bench:
	go run ./cmd/mica bench all
