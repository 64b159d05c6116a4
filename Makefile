# Herald — `make run` starts the platform locally, `make test` runs every test. `make help` lists all.
SHELL := /bin/bash
# Build outputs live outside the clone so fresh clones reuse them; override to taste.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/herald/target
HERALD_BIN := $(CARGO_TARGET_DIR)/debug/herald
# cargo-fuzz, installed into the cache by `make fuzz-tools` (stable Rust, no sanitizer).
TOOLS := $(HOME)/.cache/herald/tools
CARGO_FUZZ := $(TOOLS)/bin/cargo-fuzz
FUZZ_TARGETS := send_request event_decoding page_tokens
# Seconds per target: `make test` runs each briefly; `make fuzz FUZZ_SECONDS=3600` for long runs.
FUZZ_SECONDS ?= 20
CARGO_MUTANTS := $(TOOLS)/bin/cargo-mutants
# The pure logic under mutation testing (docs/MUTANTS.md).
MUTANT_FILES := pipeline/stages/src/rate_limit/limiter.rs pipeline/stages/src/rate_limit/route.rs \
	pipeline/stages/src/fan_out/logic.rs pipeline/ingress/src/validate.rs schemas/src/codec.rs \
	schemas/src/ids.rs pipeline/store/src/token.rs pipeline/store/src/retention.rs \
	pipeline/store-sqlite/src/feed.rs

.PHONY: alerts test-scylla help build run test test-kafka test-tansu bench unit lint fmt broker tansu clean fuzz fuzz-tools mutants

help: ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

build: ## Build the herald binary
	cargo build --bin herald

broker: ## Install the local broker (HERALD_BROKER: noida-db, the default, or tansu) into ~/.cache/herald
	@scripts/broker.sh install

tansu: ## Install tansu 0.6.0 into ~/.cache/herald if missing (a ~10-minute build; only for HERALD_BROKER=tansu)
	@scripts/tansu.sh install >/dev/null

run: broker build ## Start a local broker and the whole platform; Ctrl-C stops everything
	HERALD_BIN=$(HERALD_BIN) scripts/run-local.sh

test: ## Unit, integration, exactly-once, crash and broker-kill tests (installs what they need)
	@scripts/noida.sh install >/dev/null
	@command -v tmux >/dev/null || apt-get install -y -qq tmux >/dev/null 2>&1 || \
		echo "make test: tmux is missing and cannot be installed; herald top's test will be SKIPPED"
	@if [ "$$HERALD_TEST_BROKER" = tansu ]; then scripts/tansu.sh install >/dev/null; fi
	cargo build --bin herald
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi
	@if [ -n "$$HERALD_TEST_KAFKA" ]; then \
		echo "make test: the exactly-once tests ran against the Kafka at $$HERALD_TEST_KAFKA"; \
	else \
		echo "make test: the exactly-once tests ran against noida-db (set HERALD_TEST_KAFKA=host:port for a real Kafka)"; \
	fi
	@$(MAKE) --no-print-directory alerts
	@if [ -n "$$HERALD_TEST_SCYLLA" ]; then \
		$(MAKE) test-scylla; \
	else \
		echo "make test: real-ScyllaDB store tests SKIPPED (set HERALD_TEST_SCYLLA=host:port to run them)"; \
	fi
	$(MAKE) fuzz

alerts: ## Check the Prometheus alert rules and run their unit tests with promtool (fetched from Debian if missing)
	@rc=0; scripts/promtool.sh check rules helm/herald/alerts/herald-rules.yaml || rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "make test: alert rules check SKIPPED (promtool unavailable)"; exit 0; fi; \
	[ $$rc -eq 0 ] && (cd helm/herald/alerts && ../../../scripts/promtool.sh test rules herald-rules.test.yaml)

fuzz-tools: ## Install cargo-fuzz into ~/.cache/herald/tools if missing
	@test -x $(CARGO_FUZZ) || cargo install cargo-fuzz --locked --version 0.13.1 --root $(TOOLS)

fuzz: fuzz-tools ## Run every fuzz target for FUZZ_SECONDS (default 20) each; crashes fail (docs/FUZZING.md)
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		(cd fuzz && env -u CARGO_TARGET_DIR $(CARGO_FUZZ) fuzz run --sanitizer none \
			--target-dir $(HOME)/.cache/herald/fuzz-target $$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1) \
			|| exit 1; \
	done

mutants: ## Mutation testing of the pure logic with cargo-mutants (about 10 min warm; docs/MUTANTS.md)
	@test -x $(CARGO_MUTANTS) || cargo install cargo-mutants --locked --version 27.1.0 --root $(TOOLS)
	CARGO_TARGET_DIR=$(HOME)/.cache/herald/mutants-target $(CARGO_MUTANTS) mutants --workspace \
		$(addprefix -f ,$(MUTANT_FILES)) -o $(CARGO_TARGET_DIR)/mutants

test-tansu: tansu ## The tests that use the default local broker, on tansu instead (at-least-once)
	cargo build --bin herald
	HERALD_TEST_BROKER=tansu cargo nextest run -p herald-tests --no-fail-fast

test-scylla: ## The whole store conformance suite and TTL expiry on a real ScyllaDB: HERALD_TEST_SCYLLA=host:port make test-scylla
	@test -n "$$HERALD_TEST_SCYLLA" || { echo "set HERALD_TEST_SCYLLA=host:port (a ScyllaDB node)"; exit 2; }
	cargo test -p herald-store-scylla --test scylla -- --ignored

test-kafka: ## The exactly-once tests against a real Kafka: HERALD_TEST_KAFKA=host:port make test-kafka
	@test -n "$$HERALD_TEST_KAFKA" || { echo "set HERALD_TEST_KAFKA=host:port (a Kafka with transactions)"; exit 2; }
	cargo build --bin herald
	cargo nextest run -p herald-tests --no-fail-fast -E 'binary(exactly_once) | test(exactly_once)'

bench: broker ## Throughput, latency and memory against raw baselines (release build; writes target/bench/)
	cargo build --release --bin herald
	cargo build --release -p herald-tests --bin herald-bench --bin herald-load -p bare-kafka --bin bare-copier
	HERALD_BIN=$(CARGO_TARGET_DIR)/release/herald $(CARGO_TARGET_DIR)/release/herald-bench

unit: ## Only the tests that need no broker
	cargo test --workspace --lib --bins

lint: ## rustfmt and clippy, as CI runs them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

clean: ## Remove local run data (./var)
	rm -rf var
