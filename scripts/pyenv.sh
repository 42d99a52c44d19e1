#!/usr/bin/env bash
# Makes the Python environment of the push-provider fakes (crates/parley/tests/push_fakes.py) and
# of the E2EE interop client (crates/parley/tests/olm_client.py): a venv at target/pyenv holding
# the pinned packages of scripts/push-fakes-requirements.txt.
#
# Idempotent and cheap to call from every test: a stamp in the venv holds the hash of the
# requirement list it was installed from, and while it matches (and the venv's python still
# runs) nothing is installed and nothing but the path is printed. Progress of a real install
# goes to stderr. The last line of stdout is always the absolute path of the venv's python.
#
# python3 and its venv module come from Debian's packages when missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/pyenv"
req="$repo/scripts/push-fakes-requirements.txt"
stamp="$venv/.requirements.sha256"
python="$venv/bin/python"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

wanted_hash() { sha256sum "$req" | cut -d' ' -f1; }

# True when the venv was made from the current requirement list and still works (its base
# interpreter may have been removed or upgraded since).
up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(wanted_hash)" ] && "$python" -c '' 2>/dev/null
}

install_python() {
  echo "pyenv: installing python3 python3-venv from Debian's packages ..." >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
}

# Debian ships python3 without ensurepip (it is in python3-venv), so `python3 -m venv` is
# the test that counts, not `command -v python3`.
make_venv() {
  rm -rf "$venv"
  if command -v python3 >/dev/null 2>&1 && python3 -m venv "$venv" >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$venv"
  install_python
  python3 -m venv "$venv" >&2
}

install() {
  echo "pyenv: creating $venv ..." >&2
  make_venv
  "$python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  wanted_hash >"$stamp"
}

if ! up_to_date; then
  mkdir -p "$repo/target"
  # Several test binaries may call this at once: one installs, the others wait and re-check.
  exec 9>"$repo/target/pyenv.lock"
  flock 9
  up_to_date || install
  flock -u 9
fi

echo "$python"
