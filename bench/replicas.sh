#!/usr/bin/env bash
# One server on its embedded SQLite against one and three servers sharing
# a PostgreSQL database (Debian's, started here on loopback): how long a
# workflow takes to reach its worker and how many the servers push per
# second, then each server's memory holding 10,000 machines. See
# bench/README.md, "Several servers".
#
# The load is crates/worker/examples/swarm.rs (see bench/workers.sh): N
# simulated workers, one HTTP/2 stream each, two-action workflows created
# through the API one at a time and then in bursts. With three replicas
# the workers stream from replica 0 while the workflows are created
# through replica 1, so every dispatch crosses replicas (NOTIFY).
#
#   BENCH_WORKERS (default 200)  BENCH_WORKFLOWS (default 300)
#   BENCH_BURST (default 25; the API takes 32 connections per address)
#   BENCH_MACHINES (default 10000)
#   BENCH_KEEP=1                 keep the work directory (JSON, logs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install postgresql postgresql-client python3
cargo build --release -q -p bellows -p bellows-worker --bin bellows --example swarm
workers=${BENCH_WORKERS:-200}
workflows=${BENCH_WORKFLOWS:-300}
burst=${BENCH_BURST:-25}
machines=${BENCH_MACHINES:-10000}
bin=$PWD/target/release/bellows
swarm=$PWD/target/release/examples/swarm

work=$(mktemp -d)
cleanup() {
  local p
  # Servers are started in subshells ($(start …)): their PIDs are in a file.
  for p in $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  for p in $(cat "$work/pids" 2>/dev/null); do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  BELLOWS_TEST_POSTGRES_PORT=55433 scripts/postgres-test-server.sh stop || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A server of its own for the bench (port 55433), away from the tests'.
eval "$(BELLOWS_TEST_POSTGRES_PORT=55433 scripts/postgres-test-server.sh)"
admin=$BELLOWS_TEST_POSTGRES

start() { # NAME STORE: start a server, print "PID API HTTP"
  local name=$1 store=$2
  mkdir -p "$work/$name"
  "$bin" server --insecure --data-dir "$work/$name" --store "$store" \
    --secret-key-file "$work/secret.key" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --syslog-listen off --tftp-listen off --dhcp-mode off \
    --http-max-connections 0 --http-max-connections-per-ip 0 2>"$work/$name.log" &
  local pid=$!
  echo "$pid" >>"$work/pids"
  for _ in $(seq 1 100); do
    grep -qs 'boot URLs start with' "$work/$name.log" && break
    sleep 0.1
  done
  local api http
  api=$(grep -o 'API listening on http://[0-9.:]*' "$work/$name.log" | sed 's/.*on //')
  http=$(grep -o 'HTTP boot service.*listening on http://[0-9.:]*' "$work/$name.log" | sed 's/.*on //')
  [ -n "$api" ] && [ -n "$http" ] || { echo "bench: $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
  echo "$pid $api $http"
}

database() { # a fresh database on the bench's PostgreSQL; its URL
  local name=bench_$1_$$
  psql -X -q -d "$admin" -c "CREATE DATABASE $name" >/dev/null
  echo "${admin%/*}/$name"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

push_machines() { # API: push BENCH_MACHINES hardware records, keep-alive
  python3 - "$1" "$machines" <<'PY'
import http.client, json, sys, urllib.parse
api, n = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(api)
c = http.client.HTTPConnection(u.hostname, u.port)
for i in range(n):
    mac = "0a:00:%02x:%02x:%02x:%02x" % (i >> 24 & 255, i >> 16 & 255, i >> 8 & 255, i & 255)
    body = json.dumps({"id": f"bench-{i}", "metadata": {"instance": {"hostname": f"node{i}"}},
                       "network": {"interfaces": [{"dhcp": {"mac": mac, "hostname": f"node{i}",
                       "ip": {"address": f"10.{100 + (i >> 16)}.{i >> 8 & 255}.{i & 255}", "netmask": "255.255.0.0"}}}]}})
    c.request("POST", "/api/v1/hardware", body, {"content-type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status not in (200, 201):
        sys.exit(f"push {i}: {r.status}")
PY
}

run_swarm() { # NAME GRPC API PIDS
  timeout 900 "$swarm" run --target bellows --workers "$workers" --workflows "$workflows" \
    --burst "$burst" --warmup 20 --settle-secs 2 --idle-secs 5 \
    --grpc "$2" --api "$3" --pid "$4" --json "$work/$1.json" >/dev/null 2>"$work/$1.swarm.log"
}

memory_line() { # NAME PID...: RSS before and after pushing the machines
  local name=$1
  shift
  local p line="$name"
  for p in "$@"; do line="$line $(rss_kib "$p")"; done
  echo "$line"
}

one_server() { # NAME STORE: the swarm, then the machines, on one server
  local name=$1 pid api http
  read -r pid api http < <(start "$name" "$2")
  run_swarm "$name" "$http" "$api" "$pid"
  memory_line "$name" "$pid" >"$work/$name.mem"
  push_machines "$api"
  sleep 2
  memory_line "$name" "$pid" >>"$work/$name.mem"
  kill "$pid"
}

# 1. one server, SQLite; 2. one server, PostgreSQL
one_server sqlite sqlite
one_server pg1 "$(database pg1)"

# 3. three replicas on one database: workers on replica 0, workflows
#    created through replica 1
url=$(database pg3)
read -r p0 api0 http0 < <(start pg3-0 "$url")
read -r p1 api1 http1 < <(start pg3-1 "$url")
read -r p2 api2 http2 < <(start pg3-2 "$url")
run_swarm pg3 "$http0" "$api1" "$p0,$p1,$p2"
before=$(memory_line pg3 "$p0" "$p1" "$p2")
push_machines "$api2"
sleep 3
after=$(memory_line pg3 "$p0" "$p1" "$p2")
echo "$before" >"$work/pg3.mem"; echo "$after" >>"$work/pg3.mem"

python3 - "$work" "$workers" "$workflows" "$burst" "$machines" <<'PY'
import json, os, sys
work, n, wfs, burst, machines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
names = {"sqlite": "1 server, SQLite", "pg1": "1 server, PostgreSQL", "pg3": "3 replicas, PostgreSQL (cross-replica)"}
print(f"{n} simulated workers; {wfs} two-action workflows one at a time, then {wfs} in bursts of {burst}")
print()
print(f"  {'':<40} {'dispatch p50':>12} {'p99':>8} {'next action p50':>16} {'burst wf/s':>11} {'CPU ms/wf':>10}")
for key, label in names.items():
    p = os.path.join(work, key + ".json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))
    s, b = r["sequential"], r["burst"]
    rate = b["complete"] / b["wall_s"] if b["wall_s"] else 0
    print(f"  {label:<40} {s['dispatch_ms']['p50']:>12.2f} {s['dispatch_ms']['p99']:>8.2f} "
          f"{s['next_action_ms']['p50']:>16.2f} {rate:>11.1f} {b['server_cpu_ms_per_workflow']:>10.2f}")
print()
print(f"resident memory per server, MiB: after the workflows -> holding {machines} machines")
for key, label in names.items():
    p = os.path.join(work, key + ".mem")
    if not os.path.exists(p):
        continue
    before, after = [l.split()[1:] for l in open(p).read().splitlines()]
    cells = ", ".join(f"{int(a) / 1024:.1f} -> {int(b) / 1024:.1f}" for a, b in zip(before, after))
    print(f"  {label:<40} {cells}")
PY
