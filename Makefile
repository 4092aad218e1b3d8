# ferry — see README.md. `make test` is exactly what CI runs.
GO ?= go
PKGS := ./...

.PHONY: build test vet fmt-check run bench clean

build:
	$(GO) build -o bin/ferry ./cmd/ferry

# vet, gofmt and the whole suite with the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

run:
	$(GO) run ./cmd/ferry serve

bench:
	./scripts/bench.sh

clean:
	rm -rf bin ferry-data
