#!/usr/bin/env bash
# Starts a Bellows server on a free loopback port with a fresh data dir,
# seeds it with the quick-start data, and lets schemathesis (a program we
# did not write) check every operation against the OpenAPI document the
# server serves. The server is stopped by PID whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/bellows
[ -x "$bin" ] || cargo build --locked -q -p bellows
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --syslog-listen off --tftp-listen off --dhcp-mode off 2>"$work/server.log" &
pid=$!
url=""
for _ in $(seq 1 100); do
  url=$(grep -o -E 'bellows API listening on https?://[0-9.:]*' "$work/server.log" | head -1 | sed 's/.*listening on //') || true
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "api-conformance: server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
export BELLOWS_URL="$url"
# Over TLS, trusting the CA the server made in its data directory (the CLI
# and schemathesis both read BELLOWS_CA).
export BELLOWS_CA="$work/data/tls/ca.crt"
# Authenticated as the admin the first start created; schemathesis sends it.
BELLOWS_TOKEN=$(cat "$work/data/admin.token")
export BELLOWS_TOKEN
f=crates/bellows/tests/fixtures
"$bin" hardware push -f "$f/hardware.json" >/dev/null
"$bin" template create -n hello-world -p "$f/hello-world.tmpl" >/dev/null
"$bin" workflow create -t hello-world -r '{"device_1":"d0:50:99:d7:63:20"}' >/dev/null
scripts/schemathesis.sh
if grep -q -E 'panicked|ERROR' "$work/server.log"; then
  echo "api-conformance: the server logged errors under schemathesis:" >&2
  grep -E 'panicked|ERROR' "$work/server.log" | head -20 >&2
  exit 1
fi
