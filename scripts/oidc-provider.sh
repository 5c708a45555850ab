#!/usr/bin/env bash
# Installs panva's oidc-provider (npm, pinned) into DIR unless that version is already there, for the
# end-to-end tests against a certified provider and for `make bench`. Idempotent; needs node and npm.
#   scripts/oidc-provider.sh DIR
set -euo pipefail
VERSION=9.13.3
dir=${1:?usage: scripts/oidc-provider.sh DIR}
command -v node > /dev/null && command -v npm > /dev/null || { echo "oidc-provider: Node.js and npm are required" >&2; exit 1; }
installed=$(node -p "require('$dir/node_modules/oidc-provider/package.json').version" 2> /dev/null || true)
if [ "$installed" != "$VERSION" ]; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"private": true}' > "$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "oidc-provider@$VERSION" >&2
fi
echo "$VERSION"
