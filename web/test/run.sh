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

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "web/test/run.sh needs Node.js 20+ and npm" >&2
  exit 1
fi

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  step "installing chromium (apt)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium || { $sudo apt-get update -q && $sudo apt-get install -y -q chromium; }
fi

# `npm ci` only when the lock file changed since the last install.
stamp="$here/node_modules/.parley-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "npm ci (web/test)"
  (cd "$here" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi

step "tsc --noEmit -p web (the client) and -p web/test (the tests)"
"$here/node_modules/.bin/tsc" --noEmit -p web
"$here/node_modules/.bin/tsc" --noEmit -p web/test

if [ "${PARLEY_SKIP_BUILD:-0}" != "1" ]; then
  step "cargo build --release -p parley"
  cargo build --release -p parley --quiet
fi

step "browser tests (web/test/browser.test.mjs)"
cd "$here"
node --test --test-reporter=spec browser.test.mjs
