# `make test` is the whole suite, exactly as CI runs it.
.PHONY: test build run bench

test:
	bash scripts/test.sh

build:
	go build -o bin/mica ./cmd/mica

run:
	go run ./cmd/mica serve --dev

bench:
	go run ./cmd/mica bench issue --concurrency 64 --duration 10s
