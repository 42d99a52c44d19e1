#!/usr/bin/env bash
# Makes sure the services the tests talk to are reachable, starting private ones when they are
# not: PostgreSQL (trust auth), NATS with JetStream, Redis. Sourced by scripts/test.sh; exports
# PARLEY_TEST_POSTGRES, PARLEY_TEST_NATS and PARLEY_TEST_REDIS for the tests.
#
# On the project's machines all three already run on their standard ports. Elsewhere (a fresh
# Debian with only the Rust toolchain) the missing ones are installed from Debian's packages and
# started under target/services/, on their own ports, owned by this user.

svc_dir="$(pwd)/target/services"

reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_package() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/$1" ] && { PATH="$d:$PATH"; return 0; }; done
  echo "installing $2 (for $1) ..."
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/$1" ] && PATH="$d:$PATH"; done
  command -v "$1" >/dev/null 2>&1
}

wait_port() { # port name
  for _ in $(seq 100); do reachable "$1" && return 0; sleep 0.1; done
  echo "$2 did not start on port $1" >&2
  return 1
}

ensure_postgres() {
  if [ -n "${PARLEY_TEST_POSTGRES:-}" ]; then return 0; fi
  if reachable 5432; then
    export PARLEY_TEST_POSTGRES="postgres://postgres@127.0.0.1:5432/postgres"
    return 0
  fi
  local port=55432 data="$svc_dir/postgres"
  need_package initdb postgresql
  if ! reachable $port; then
    mkdir -p "$svc_dir"
    # PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
    local run=()
    if [ "$(id -u)" -eq 0 ]; then
      id postgres >/dev/null 2>&1 || useradd -r -m postgres
      chown -R postgres "$svc_dir"
      run=(runuser -u postgres --)
    fi
    [ -f "$data/PG_VERSION" ] || "${run[@]}" initdb -D "$data" -A trust -U postgres >/dev/null
    "${run[@]}" pg_ctl -D "$data" -l "$svc_dir/postgres.log" -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
    wait_port $port PostgreSQL
  fi
  export PARLEY_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_nats() {
  if [ -n "${PARLEY_TEST_NATS:-}" ]; then return 0; fi
  if reachable 4222; then
    export PARLEY_TEST_NATS="nats://127.0.0.1:4222"
    return 0
  fi
  local port=54222
  need_package nats-server nats-server
  if ! reachable $port; then
    mkdir -p "$svc_dir/nats"
    nohup nats-server -js -a 127.0.0.1 -p $port -sd "$svc_dir/nats" >"$svc_dir/nats.log" 2>&1 &
    wait_port $port NATS
  fi
  export PARLEY_TEST_NATS="nats://127.0.0.1:$port"
}

ensure_redis() {
  if [ -n "${PARLEY_TEST_REDIS:-}" ]; then return 0; fi
  if reachable 6379; then
    export PARLEY_TEST_REDIS="redis://127.0.0.1:6379"
    return 0
  fi
  local port=56379
  need_package redis-server redis-server
  if ! reachable $port; then
    redis-server --bind 127.0.0.1 --port $port --save '' --appendonly no --daemonize yes \
      --logfile "$svc_dir/redis.log" >/dev/null
    wait_port $port Redis
  fi
  export PARLEY_TEST_REDIS="redis://127.0.0.1:$port"
}

ensure_postgres
ensure_nats
ensure_redis
# The fault tests run their own nats-server and redis-server; make sure both programs exist.
need_package nats-server nats-server
need_package redis-server redis-server
echo "services: postgres ${PARLEY_TEST_POSTGRES}, nats ${PARLEY_TEST_NATS}, redis ${PARLEY_TEST_REDIS}"
