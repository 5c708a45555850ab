#!/usr/bin/env bash
# Starts the local stack for `make run`: the issuer, whoami and the gateway (the filter in proxy-wasm-host,
# configured from envoy/envoy.yaml), waits until each answers, prints where to go, and stops all three on
# Ctrl-C. Expects the binaries under $CARGO_TARGET_DIR/debug and the filter at $TOKENGATE_WASM.
set -euo pipefail
bin="${CARGO_TARGET_DIR:?}/debug"
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

wait_for() { # name url
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then echo "$1 exited; see the log above" >&2; exit 1; fi
    sleep 0.1
  done
  echo "$1 did not answer at $2" >&2
  exit 1
}

mkdir -p data
"$bin/issuer" serve --config "${ISSUER_CONFIG:-issuer/examples/dev.yaml}" & pids+=($!)
wait_for issuer http://127.0.0.1:5556/healthz
"$bin/whoami" --listen 127.0.0.1:8081 & pids+=($!)
wait_for whoami http://127.0.0.1:8081/healthz
"$bin/gateway" --envoy envoy/envoy.yaml & pids+=($!)
wait_for gateway http://127.0.0.1:8080/healthz

cat <<MSG

  tokengate is running:
    dashboard (gateway + filter):  http://127.0.0.1:8080/
    issuer:                        http://127.0.0.1:5556/.well-known/openid-configuration
    sign in as admin@example.com / password  (or jane@example.com / password)

  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
