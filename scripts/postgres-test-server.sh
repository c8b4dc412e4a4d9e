#!/usr/bin/env bash
# Starts one throwaway PostgreSQL (Debian's postgresql package) for a test
# run: the store tests on the PostgreSQL backend and the replica tests each
# make a database of their own on it. Loopback only, on its own port, in
# its own directory, trust authentication for the `bellows` superuser; run
# as the `postgres` user when this is root (PostgreSQL refuses root).
# Idempotent, and tolerates what a killed run left behind (a server still
# running from the last run's directory is stopped and the directory made
# anew). Prints the line to eval:
#   export BELLOWS_TEST_POSTGRES=postgres://bellows@127.0.0.1:PORT/postgres
#
# Usage: scripts/postgres-test-server.sh [start]   start (default)
#        scripts/postgres-test-server.sh stop      stop it and remove its directory
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DIR="/tmp/bellows-test-postgres${BELLOWS_TEST_POSTGRES_PORT:+-$BELLOWS_TEST_POSTGRES_PORT}"
PORT="${BELLOWS_TEST_POSTGRES_PORT:-55432}"
URL="postgres://bellows@127.0.0.1:$PORT/postgres"

run_as() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

bin_dir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

stop_server() {
  local bin
  bin="$(bin_dir)"
  if [ -n "$bin" ] && [ -f "$DIR/data/postmaster.pid" ]; then
    run_as "$bin/pg_ctl" stop -m immediate -w -t 30 -D "$DIR/data" >/dev/null 2>&1 || true
  fi
  # A postmaster whose pg_ctl could not stop it (its directory half gone).
  local pid
  pid="$(head -n 1 "$DIR/data/postmaster.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = postgres ]; then
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}

start_server() {
  [ -n "$(bin_dir)" ] || apt_install postgresql postgresql-client
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  if psql -X -q -At -d "$URL" -c 'SELECT 1' >/dev/null 2>&1; then
    return 0
  fi
  stop_server
  local bin
  bin="$(bin_dir)"
  mkdir -p "$DIR"
  [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$DIR"
  run_as "$bin/initdb" --no-sync --auth=trust --encoding=UTF8 -U bellows -D "$DIR/data" >"$DIR/initdb.log" 2>&1 || {
    echo "postgres-test-server: initdb failed:" >&2
    cat "$DIR/initdb.log" >&2
    exit 1
  }
  # Speed over durability across OS crashes: a test database.
  run_as "$bin/pg_ctl" start -w -t 60 -D "$DIR/data" -l "$DIR/postgres.log" \
    -o "-h 127.0.0.1 -p $PORT -k $DIR -c fsync=off -c full_page_writes=off -c max_connections=500" >/dev/null || {
    echo "postgres-test-server: the server did not start; log:" >&2
    tail -n 40 "$DIR/postgres.log" >&2 || true
    exit 1
  }
  echo "postgres-test-server: PostgreSQL on 127.0.0.1:$PORT (log $DIR/postgres.log)" >&2
}

case "${1:-start}" in
start)
  start_server
  echo "export BELLOWS_TEST_POSTGRES=$URL"
  ;;
stop)
  stop_server
  ;;
*)
  echo "usage: $0 [start|stop]" >&2
  exit 2
  ;;
esac
