#!/usr/bin/env bash
# Metadata requests/s: Bellows answering /latest/meta-data/hostname (caller
# lookup by source address, live from the store's index) against nginx
# serving the same bytes as a static file, in the same run, same client
# (wrk), same loopback. Prints both rates and the ratio.
#
#   BENCH_SECONDS (default 10)  BENCH_CONNECTIONS (default 32)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install wrk nginx-light
cargo build --release --locked -q -p bellows
secs=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-32}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bin=target/release/bellows
"$bin" server --insecure --data-dir "$work/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --syslog-listen off --tftp-listen off --dhcp-mode off --log warn,bellows=info 2>"$work/bellows.log" &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q 'HTTP boot service.*listening on http' "$work/bellows.log" && break
  sleep 0.1
done
api=$(grep -o 'API listening on http://[0-9.:]*' "$work/bellows.log" | sed 's/.*on //')
http=$(grep -o 'HTTP boot service.*listening on http://[0-9.:]*' "$work/bellows.log" | sed 's/.*on //')
BELLOWS_URL=$api "$bin" hardware push -f - >/dev/null <<'JSON'
{"id": "bench", "metadata": {"instance": {"hostname": "bench-node-01"}},
 "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:be:01", "ip": {"address": "127.0.0.1"}}}]}}
JSON
body=$(curl -sf "$http/latest/meta-data/hostname")
[ "$body" = "bench-node-01" ] || { echo "bench: bellows answered '$body'" >&2; exit 1; }

# nginx: the same bytes from a file, one worker per core, no logging.
mkdir -p "$work/www/latest/meta-data"
printf '%s' "$body" > "$work/www/latest/meta-data/hostname"
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  server {
    listen 127.0.0.1:18089;
    root $work/www;
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18089/latest/meta-data/hostname >/dev/null && break; sleep 0.1; done

run() { wrk -t1 -c"$conns" -d"${secs}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
bellows_rps=$(run "$http/latest/meta-data/hostname")
nginx_rps=$(run "http://127.0.0.1:18089/latest/meta-data/hostname")
ratio=$(awk -v a="$bellows_rps" -v b="$nginx_rps" 'BEGIN { printf "%.2f", a / b }')
echo "metadata GET /latest/meta-data/hostname, wrk -t1 -c$conns -d${secs}s, loopback:"
echo "  bellows  $bellows_rps req/s"
echo "  nginx    $nginx_rps req/s (static file, same bytes)"
echo "  ratio    $ratio (bellows / nginx)"
