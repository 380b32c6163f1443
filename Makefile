# Shoal's commands. `make run` and `make test` first make sure the machine has what
# the build needs (see scripts/ensure-deps.sh).

CARGO ?= cargo
# Arguments passed to `shoal node` by `make run`, e.g. make run ARGS="--store-id 2".
ARGS ?=

.PHONY: run test bench bench-compare chaos fmt lint deny deps

deps:
	@scripts/ensure-deps.sh

## run: start a single-node Shoal store with its data in ./shoal-data
run: deps
	$(CARGO) run --release -p shoal-server --bin shoal -- node $(ARGS)

# Failpoints (for the chaos suite's disk nemesis) are compiled into the test and
# chaos builds; they do nothing unless a node is started with FAILPOINTS set.
FEATURES = --features shoal-server/failpoints

# One build profile for every command: `make test`, `make run`, `make chaos` and
# `make bench-compare` all build in release, so RocksDB's C++ (the long part of a
# first build, same profile and same features everywhere) is compiled once and
# shared; each command then only builds Shoal's own crates.
## test: build everything and run every test (the chaos suite's short run included)
test: deps
	$(CARGO) test --release --workspace $(FEATURES)

## bench: run the criterion micro-benchmarks (log engine, router)
bench: deps
	$(CARGO) bench -p shoal-bench

## bench-compare: Shoal vs etcd, 3 nodes each on 127.0.0.1, same workload and client
## (installs etcd-server when missing; pass options with ARGS, e.g. ARGS="--duration 10s")
bench-compare: deps
	@scripts/ensure-etcd.sh
	$(CARGO) build --release -p shoal-server --bin shoal
	target/release/shoal bench-compare $(ARGS)

## chaos: the chaos suite, about 14 minutes: each nemesis alone, sparse load over many
## (mostly dormant) regions, then all combined, then all combined with mutual TLS,
## on release builds; a summary table per run (pass options with ARGS, e.g.
## ARGS="--nodes 5"). Exits non-zero if any run fails a check.
chaos: deps
	$(CARGO) build --release --workspace --tests $(FEATURES)
	scripts/chaos.sh target/release/shoal $(ARGS)

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## deny: cargo-deny's checks of the dependencies (advisories, licenses, duplicate
## versions, sources; deny.toml); installs cargo-deny when missing (scripts/deny.sh
## says where the advisory database comes from)
deny:
	@scripts/deny.sh

## lint: check formatting, clippy (warnings are errors) and the dependencies
lint: deps deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets $(FEATURES) -- -D warnings
