# tokengate: an OIDC issuer and a proxy-wasm authenticator for Envoy. `make help` lists the targets.

TOOLCHAIN      := 1.96
WASM_TARGET    := wasm32-wasip1
CARGO          ?= cargo
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
WASM_OUT       := $(CARGO_TARGET_DIR)/$(WASM_TARGET)/release/filter.wasm
ISSUER_CONFIG  ?= issuer/examples/dev.yaml
FUZZ_TARGETS   := cookie jwt config
ISSUER_FUZZ_TARGETS := config_file client_auth id_token_hint user_code login_form
FUZZ_SECONDS   ?= 60
SUDO           := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help setup setup-test run test wasm lint deny fmt bench drills fuzz clean

##@ General

help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup

setup: ## Install what building and `make run` need: the Rust toolchain, the wasm target, clang (ring on wasm32), curl (idempotent)
	@command -v rustup >/dev/null || { echo "rustup is required: https://rustup.rs"; exit 1; }
	@rustup toolchain list | grep -q "^$(TOOLCHAIN)-" || rustup toolchain install $(TOOLCHAIN) --profile minimal
	@rustup component list --toolchain $(TOOLCHAIN) --installed | grep -q '^clippy' || rustup component add clippy rustfmt --toolchain $(TOOLCHAIN)
	@rustup target list --toolchain $(TOOLCHAIN) --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET) --toolchain $(TOOLCHAIN)
	@missing=""; \
	  command -v clang >/dev/null || missing="$$missing clang"; \
	  command -v curl >/dev/null || missing="$$missing curl"; \
	  if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

setup-test: setup ## Also install the tests' real peers: chromium + chromedriver (browser test), postgresql (storage tests, drills), slapd + ldap-utils (LDAP connector tests), python3-venv (gRPC API test with grpcio) (idempotent)
	@missing=""; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  [ -x /usr/sbin/slapd ] || missing="$$missing slapd"; \
	  command -v ldapsearch >/dev/null || missing="$$missing ldap-utils"; \
	  python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	  if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

##@ Development

run: setup wasm ## Start the local stack: issuer :5556, gateway with the filter :8080, whoami :8081 (Ctrl-C stops it)
	$(CARGO) build -p issuer -p tests --bins
	TOKENGATE_WASM=$(WASM_OUT) scripts/run-stack.sh

wasm: setup ## Build the filter for Envoy: target/wasm32-wasip1/release/filter.wasm
	$(CARGO) build -p filter --target $(WASM_TARGET) --profile wasm-release
	@mkdir -p $(dir $(WASM_OUT))
	@cp $(CARGO_TARGET_DIR)/$(WASM_TARGET)/wasm-release/filter.wasm $(WASM_OUT)
	@ls -l $(WASM_OUT)

test: setup-test wasm ## Run every test: unit (natively and compiled to wasm), storage conformance (memory, SQLite, PostgreSQL), issuer over HTTP, filter e2e in proxy-wasm-host (against the issuer and panva oidc-provider), HA and the failure drills, browser
	scripts/oidc-provider.sh $(CARGO_TARGET_DIR)/node > /dev/null
	$(CARGO) build -p tests --bin wasm-test-runner
	CARGO_TARGET_WASM32_WASIP1_RUNNER=$(CARGO_TARGET_DIR)/debug/wasm-test-runner $(CARGO) test -p filter --target $(WASM_TARGET)
	scripts/with-postgres.sh $(CARGO) test --workspace --no-fail-fast -- --include-ignored

drills: setup-test ## Run the issuer's failure drills (replicas killed under load, PostgreSQL restarted, keys rotating every 10 s, migrations raced, a GC backlog) and write their tables into BENCHMARKS.md; `make test` runs them too
	CARGO="$(CARGO)" scripts/drills.sh

fuzz: wasm ## Run each fuzz target for FUZZ_SECONDS (default 60): the filter's (cookie, jwt, config), the compiled-module fuzzer, and the issuer's (config_file, client_auth, id_token_hint, user_code, login_form); installs nightly and cargo-fuzz
	@rustup toolchain list | grep -q "^nightly-" || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd filter/fuzz && for t in $(FUZZ_TARGETS); do \
	  CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/fuzz cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
	@mkdir -p issuer/fuzz/corpus/config_file && cp issuer/examples/*.yaml issuer/tests/fixtures/*.yaml issuer/fuzz/corpus/config_file/
	cd issuer/fuzz && for t in $(ISSUER_FUZZ_TARGETS); do \
	  CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/fuzz cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
	$(CARGO) run -p tests --bin fuzz-module -- --seconds $(FUZZ_SECONDS) --wasm $(WASM_OUT)

bench: setup-test wasm ## Run the benchmarks (filter in wasmtime, issuer vs oidc-provider; installs wrk and oidc-provider) and write BENCHMARKS.md
	CARGO="$(CARGO)" scripts/bench.sh

lint: setup ## fmt --check and clippy -D warnings (native and wasm)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p filter --target $(WASM_TARGET) -- -D warnings

deny: ## Licences, sources and duplicate crates against deny.toml (cargo-deny, installed on first use); RustSec advisories when their database can be fetched
	@command -v cargo-deny >/dev/null || $(CARGO) install cargo-deny --locked
	cargo deny check licenses bans sources
	@if cargo deny fetch db >/dev/null 2>&1; then cargo deny check advisories; \
	  else echo "deny: the RustSec advisory database (github.com) cannot be fetched: advisories not checked"; fi

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output and local data
	$(CARGO) clean
	rm -rf data dev-certs
