#!/usr/bin/env bash
# `make bench` (after `make setup-test wasm`): installs the load tools, builds the no-op module, the release
# issuer and the `bench` binary, then runs `bench run`, which measures everything and writes BENCHMARKS.md.
# Every command that does work is recorded in $CARGO_TARGET_DIR/bench-work/commands.txt for the report.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WASM_TARGET=wasm32-wasip1
NODE_DIR="$CARGO_TARGET_DIR/bench-node"
WORK_DIR="$CARGO_TARGET_DIR/bench-work"
COMMANDS="$WORK_DIR/commands.txt"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

mkdir -p "$WORK_DIR"
: > "$COMMANDS"
run() {
  echo "$*" >> "$COMMANDS"
  echo "+ $*" >&2
  "$@"
}

# The load generator for fixed URLs (discovery, JWKS), and the profiler for the filter's loop, from Debian.
if ! command -v wrk > /dev/null || ! command -v perf > /dev/null; then
  run $SUDO apt-get update -q
  run $SUDO apt-get install -y -q wrk linux-perf
fi

# The reference issuer: panva's oidc-provider from npm, in a cache beside the build output.
installed=$(scripts/oidc-provider.sh "$NODE_DIR")
echo "scripts/oidc-provider.sh $NODE_DIR  # oidc-provider $installed" >> "$COMMANDS"

run "$CARGO" build --manifest-path bench/noop-filter/Cargo.toml --target "$WASM_TARGET" --release
# Separately, so the issuer is built with its own features only, as it ships.
run "$CARGO" build --release -p issuer
run "$CARGO" build --release -p bench
# `make drills` owns the "Failure drills" section: keep it across the rewrite.
drills=$(sed -n '/<!-- drills:begin -->/,/<!-- drills:end -->/p' BENCHMARKS.md 2>/dev/null || true)
run "$CARGO_TARGET_DIR/release/bench" run --out BENCHMARKS.md --commands-file "$COMMANDS" "$@"
if [ -n "$drills" ]; then printf '\n%s\n' "$drills" >> BENCHMARKS.md; fi
