# ferry — see README.md. `make test` is exactly what CI runs.
GO ?= go
PKGS := ./...

.PHONY: build test vet fmt-check run bench bench-smoke clean crash-test cluster-test fuzz e2e browser-test dashboard-screenshot policies-report

build:
	$(GO) build -o bin/ferry ./cmd/ferry

# vet, gofmt and the whole suite with the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -tags crash -count=1 -timeout 20m ./tests/crash/
	$(MAKE) cluster-test
	$(MAKE) s3-test
	$(MAKE) bench-smoke
	$(MAKE) browser-test
	$(MAKE) e2e

# ferry against a real kubo (tests/e2e): pins through the Pinning Service
# API and kubo's ipfs pin remote, fetched through kubo's gateway and RPC,
# round-tripped through ipfs dag import, one stored in an S3 bucket; a
# tree packed by ferry pack, imported and read back through kubo, a pack
# killed and resumed, a pack published to deals, and the README's
# walk-through run as written (about two minutes).
# scripts/kubo.sh builds kubo v0.32.1 once into ~/.cache/ferry, and
# scripts/s3server.sh SeaweedFS (minutes each on a fresh machine).
e2e:
	@kubo=$$(./scripts/kubo.sh) && s3=$$(./scripts/s3server.sh) && \
	FERRY_KUBO="$$kubo" FERRY_S3_SERVER="$$s3" $(GO) test -tags e2e -count=1 -timeout 20m ./tests/e2e/ -v

# The dashboard in Debian's headless chromium, driven by chromedp
# (internal/node, build tag browser): a ferry with deals, a filling
# aggregate and a rejection, the overview checked against the API, a
# search followed to a CAR's page; and ferry whatif's HTML report (whatif),
# its charts' bars measured against the JSON report. scripts/chromium.sh installs chromium
# with apt-get when it is missing. Screenshots go to $FERRY_ARTIFACTS
# (default: a temporary directory, logged).
browser-test:
	FERRY_CHROMIUM="$$(./scripts/chromium.sh)" $(GO) test -tags browser -race -count=1 -timeout 10m -run 'TestDashboard|TestTheHTMLReport' ./internal/node/ ./whatif/ -v

# docs/dashboard.png, taken by the browser test.
dashboard-screenshot:
	FERRY_CHROMIUM="$$(./scripts/chromium.sh)" FERRY_DOCS_SCREENSHOT="$(CURDIR)/docs/dashboard.png" \
		$(GO) test -tags browser -count=1 -timeout 10m -run TestDashboardInBrowser ./internal/node/

# docs/policies.md's example: bench/cmd/tenants' synthetic workload (2,000
# small tenants, 4 big ones, four simulated weeks) folded by package
# whatif under the grouping strategies; rewrites docs/policies-example.html
# and the table of docs/policies.md, the same bytes every run (about a
# minute; not part of make test).
policies-report:
	$(GO) run ./bench/cmd/tenants report -html docs/policies-example.html -md docs/policies.md

# The S3 CAR store against a real S3-compatible server (SeaweedFS, built
# once and cached by scripts/s3server.sh; the first build takes minutes).
s3-test:
	FERRY_S3_SERVER="$$(./scripts/s3server.sh)" $(GO) test -tags s3 -race -count=1 -timeout 10m -run TestS3 ./carstore/

# Three nats-server processes from docs/cluster's config files and two
# ferry serve --replicas 3: SIGKILLs stream leaders, the leading ferry and
# a whole server during ingest and takes a server out in lame duck mode,
# then audits through every ferry and compares their answers
# (tests/cluster; CLUSTER_N=3000 for the issue's size, see its package
# doc). About two minutes on 2 cores.
cluster-test:
	$(GO) test -tags cluster -count=1 -timeout 15m ./tests/cluster/ -v

# Every benchmark line at CI's size (about a minute), so make bench keeps
# working: a line that fails fails the target. Installs nothing (without
# wrk, bench/cmd/loadgen drives the status API).
bench-smoke:
	./scripts/bench.sh --smoke --no-install --out "$${TMPDIR:-/tmp}/ferry-bench-smoke-$$$$"

# SIGKILLs ferry serve and the NATS server under load, then audits
# (tests/crash; CRASH_N=100000 for the full run, see its package doc).
crash-test:
	$(GO) test -tags crash -count=1 -timeout 60m ./tests/crash/ -v

# Each fuzz target for FUZZTIME; the seed corpora under testdata/fuzz run
# in every go test. Minimizing a new input is capped so slow targets
# (FuzzFold) keep fuzzing.
FUZZTIME ?= 10s
FUZZMINIMIZE ?= 5s
FUZZ_TARGETS := ./events:FuzzDecode ./spade:FuzzParseReport ./spade:FuzzParseOracle \
	./projections:FuzzCarsBody ./aggregator:FuzzFold ./aggregator:FuzzFoldOps ./aggregator:FuzzBatchBound ./carcheck:FuzzCheck
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$${t#*:}\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) "$${t%%:*}/"; \
	done

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
