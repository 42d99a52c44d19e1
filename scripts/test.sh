#!/usr/bin/env bash
# Runs every test of Parley: formatting, lints, unit and conformance suites, the end-to-end
# tests against the real binary, the web client's type check and browser tests, and the public
# protocol checks. Needs the Rust toolchain; the web client's runner installs Node.js, Chromium
# and its npm packages when missing, and python3 for the protocol checks (whose runner
# installs its own packages). PostgreSQL, NATS and Redis are used where they run and started
# privately where they do not (scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings

step "cargo build --release"
cargo build --release --workspace --all-targets --quiet

step "services (PostgreSQL, NATS, Redis)"
# shellcheck source=scripts/services.sh
source scripts/services.sh

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --no-fail-fast
else
  cargo test --release --workspace --no-fail-fast
fi

# The web client: its type check and the browser tests against the binary built above.
step "web client (web/test/run.sh)"
PARLEY_SKIP_BUILD=1 ./web/test/run.sh

# The public protocol checks live beside the repository in shared/ (present in CI).
conformance=../shared/conformance/run.sh
if [ -f "$conformance" ] && command -v python3 >/dev/null; then
  step "protocol conformance (shared/conformance)"
  bash "$conformance"
else
  step "protocol conformance skipped: $conformance or python3 not found"
fi
