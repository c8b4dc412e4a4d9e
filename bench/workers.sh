#!/usr/bin/env bash
# 1,000 simulated workers on one server: the server's memory per connected
# worker, and how long an action takes to reach its worker, against a bare
# gRPC peer in the same run. Everything on 127.0.0.1.
#
# The simulator is crates/worker/examples/swarm.rs: one HTTP/2 connection
# and one Subscribe stream per worker (the agent's settings), RUNNING then
# SUCCESS reported for each action it is given, nothing run. Three servers,
# one at a time, each with its own swarm:
#   bellows   `bellows server` (SQLite store, default info log); workflows
#             made with POST /api/v1/workflows, two actions each
#   baseline  `swarm serve-baseline`: tonic on the same axum/hyper stack,
#             a channel per stream in a map, an assignment pushed on a unary
#             call, the next one on SUCCESS; no store, no templates
#   nginx     nginx-light, one worker process, `listen … http2` (h2c):
#             idle HTTP/2 connections only (it has no gRPC service to
#             subscribe to)
#   bellows-nodelay, baseline-nodelay
#             the same two with TCP_NODELAY set on every accepted socket by
#             an LD_PRELOAD shim (compiled here from the C below): neither
#             sets it, and Nagle's algorithm meeting the worker's delayed
#             ACK holds a push that follows a reply by up to 40 ms
# Idle: the server's CPU time (utime + stime, /proc/PID/stat) while the N
# workers sit subscribed with nothing to do. Memory: VmRSS and Pss (smaps_rollup) of the server's processes with no
# worker, with N connections, with N subscribed workers; per worker =
# difference / N. Latency: BENCH_WORKFLOWS workflows one at a time, each for
# the next worker in turn, then as many again in bursts of BENCH_BURST made
# at once for distinct workers; p50/p95/p99/max in ms.
#
#   BENCH_WORKERS (default 1000)   BENCH_WORKFLOWS (default 500)
#   BENCH_BURST (default 100)      BENCH_WARMUP (default 20)
#   BENCH_SETTLE_SECS (default 3)  wait before each memory reading
#   BENCH_IDLE_SECS (default 30)   server CPU measured over this long with
#                                  the workers subscribed and idle
#   BENCH_BELLOWS_LOG              Bellows' --log (default: its own, info)
#   BENCH_TARGETS (default "bellows baseline bellows-nodelay baseline-nodelay nginx")
#   BENCH_KEEP=1                   keep the work directory (JSON, logs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install nginx-light python3
build=(cargo build --release -q -p bellows -p bellows-worker --bin bellows --example swarm)
if ! "${build[@]}" --locked; then
  echo "bench: 'cargo build --locked' failed (Cargo.lock out of date?); building without --locked" >&2
  "${build[@]}"
fi
workers=${BENCH_WORKERS:-1000}
workflows=${BENCH_WORKFLOWS:-500}
burst=${BENCH_BURST:-100}
warmup=${BENCH_WARMUP:-20}
settle=${BENCH_SETTLE_SECS:-3}
idle=${BENCH_IDLE_SECS:-30}
targets=${BENCH_TARGETS:-bellows baseline bellows-nodelay baseline-nodelay nginx}
bellows_log=${BENCH_BELLOWS_LOG:-}
bin=$PWD/target/release/bellows
swarm=$PWD/target/release/examples/swarm
nginx_port=18091

# Client and server each hold one socket per worker.
want=$((2 * workers + 256))
if [ "$(ulimit -n)" -lt "$want" ]; then
  ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
[ "$(ulimit -n)" -ge "$want" ] || echo "bench: open-file limit $(ulimit -n) < $want; expect failures" >&2

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# TCP_NODELAY on every TCP socket the server accepts (bench only).
cat >"$work/nodelay.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
  int one = 1, type = 0;
  socklen_t len = sizeof type;
  struct sockaddr_storage a;
  socklen_t alen = sizeof a;
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return;
  if (getsockname(fd, (struct sockaddr *)&a, &alen) != 0) return;
  if (a.ss_family != AF_INET && a.ss_family != AF_INET6) return;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}
int accept4(int s, struct sockaddr *addr, socklen_t *len, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
  int fd = real(s, addr, len, flags);
  nodelay(fd);
  return fd;
}
int accept(int s, struct sockaddr *addr, socklen_t *len) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
  int fd = real(s, addr, len);
  nodelay(fd);
  return fd;
}
C
cc -O2 -Wall -shared -fPIC -o "$work/nodelay.so" "$work/nodelay.c" -ldl

stop() { # PID: stop one server we started, wait for it (≤ 10 s), forget it
  local i
  kill "$1" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  pids=() # one server runs at a time
}

load() { # one line: load average and idle CPU over 0.5 s
  printf 'load %s | ' "$(cut -d' ' -f1-3 /proc/loadavg)"
  top -b -n 2 -d 0.5 | awk '/^%Cpu/ {n++} n == 2 && /^%Cpu/ {match($0, /[0-9.]+ id/); print "idle " substr($0, RSTART, RLENGTH - 3) "%"; exit}'
}

swarm_run() { # TARGET JSON ARGS...: one bounded simulator run
  local target=$1 out=$2
  shift 2
  echo "bench: $t: $(load)" >&2
  timeout 900 "$swarm" run --target "$target" --workers "$workers" --workflows "$workflows" \
    --burst "$burst" --warmup "$warmup" --settle-secs "$settle" --idle-secs "$idle" --json "$out" "$@" >/dev/null
}

for t in $targets; do
  preload=""
  case $t in *-nodelay) preload=$work/nodelay.so ;; esac
  case $t in
  bellows | bellows-nodelay)
    log_args=()
    [ -n "$bellows_log" ] && log_args=(--log "$bellows_log")
    rm -rf "$work/data"
    env ${preload:+LD_PRELOAD=$preload} "$bin" server --insecure --data-dir "$work/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
      --syslog-listen off --tftp-listen off --dhcp-mode off \
      --http-max-connections 0 --http-max-connections-per-ip 0 ${log_args[@]+"${log_args[@]}"} 2>"$work/$t.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 100); do
      grep -qs 'HTTP boot service.*listening on http' "$work/$t.log" && break
      sleep 0.1
    done
    api=$(grep -o 'API listening on http://[0-9.:]*' "$work/$t.log" | sed 's/.*on //')
    http=$(grep -o 'HTTP boot service.*listening on http://[0-9.:]*' "$work/$t.log" | sed 's/.*on //')
    [ -n "$api" ] && [ -n "$http" ] || { echo "bench: bellows did not start:" >&2; cat "$work/$t.log" >&2; exit 1; }
    # Workers reach the server on the HTTP boot listener, as booted machines do.
    swarm_run bellows "$work/$t.json" --grpc "$http" --api "$api" --pid "$pid"
    stop "$pid"
    ;;
  baseline | baseline-nodelay)
    env ${preload:+LD_PRELOAD=$preload} "$swarm" serve-baseline 127.0.0.1:0 >"$work/$t.out" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 50); do grep -qs 'listening on' "$work/$t.out" && break; sleep 0.1; done
    url=$(grep -o 'http://[0-9.:]*' "$work/$t.out") || { echo "bench: baseline did not start" >&2; exit 1; }
    swarm_run baseline "$work/$t.json" --grpc "$url" --pid "$pid"
    stop "$pid"
    ;;
  nginx)
    mkdir -p "$work/www"
    cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections $((workers + 256)); }
http {
  access_log off;
  keepalive_timeout 3600s;
  client_header_timeout 3600s;
  server {
    listen 127.0.0.1:$nginx_port http2;
    root $work/www;
  }
}
NGINX
    nginx -e "$work/nginx.err" -c "$work/nginx.conf" -p "$work" &
    pid=$!
    pids+=("$pid")
    child=""
    for _ in $(seq 1 50); do
      child=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
      if [ -n "$child" ] && curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$nginx_port/"; then break; fi
      child=""
      sleep 0.1
    done
    [ -n "$child" ] || { echo "bench: nginx did not start" >&2; cat "$work/nginx.err" >&2; exit 1; }
    swarm_run connect-only "$work/nginx.json" --grpc "http://127.0.0.1:$nginx_port" \
      --pid "$pid,$(echo $child | tr ' ' ',')"
    stop "$pid"
    ;;
  *) echo "bench: unknown target $t" >&2; exit 1 ;;
  esac
done

python3 - "$work" "$workers" "$workflows" "$burst" <<'PY'
import json, os, sys
work, n, wfs, burst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = ("bellows", "baseline", "bellows-nodelay", "baseline-nodelay", "nginx")
res = {}
for name in names:
    p = os.path.join(work, name + ".json")
    if os.path.exists(p):
        res[name] = json.load(open(p))
def get(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d
def peer(name):  # what a Bellows row is divided by
    return {"bellows": "baseline", "bellows-nodelay": "baseline-nodelay"}.get(name)
def cell(d):
    return "-" if d is None else f"{d['rss_bytes'] / 1024:.1f} ({d['pss_bytes'] / 1024:.1f})"

print(f"{n} simulated workers, one HTTP/2 connection each, loopback")
print()
print("server memory per worker, KiB: RSS (Pss); ratio = bellows / baseline, per subscribed worker")
print(f"  {'server':<17} {'connection':>14} {'+ stream':>14} {'subscribed':>14} {'ratio':>6}")
for name, r in res.items():
    tot = r.get("per_worker")
    b = get(res, peer(name), "per_worker", "rss_bytes")
    ratio = f"{tot['rss_bytes'] / b:.2f}" if tot and b else ""
    print(f"  {name:<17} {cell(r['per_connection']):>14} {cell(r.get('per_stream')):>14} {cell(tot):>14} {ratio:>6}")
print("  RSS, MiB: idle / N connected / N subscribed / after the workflows")
for name, r in res.items():
    m = r["memory"]
    print(f"  {name:<17} " + " / ".join(f"{m[k]['rss_kib'] / 1024:.1f}" for k in ("idle", "connected", "subscribed", "after") if k in m))
print()
print("server CPU with the workers subscribed and idle, ms per second:")
for name, r in res.items():
    i = r.get("idle")
    if i:
        print(f"  {name:<17} {i['server_cpu_ms_per_s']:7.2f}   ({i['server_cpu_ms']} ms in {i['secs']} s)")
print()
rows = [
    ("dispatch_ms", "create -> Run(a1) on the stream"),
    ("create_rtt_ms", "create call round trip"),
    ("next_action_ms", "SUCCESS(a1) sent -> Run(a2)"),
    ("running_rtt_ms", "RUNNING report round trip"),
    ("success_rtt_ms", "SUCCESS report round trip"),
]
for phase, title in (("sequential", f"{wfs} workflows one at a time"),
                     ("burst", f"{wfs} workflows in bursts of {burst}")):
    print(f"latency, ms, {title}; ratio = p50 / the peer's p50")
    print(f"  {'':<34} {'server':<17} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'ratio':>6}")
    for key, label in rows:
        first = True
        for name in names:
            st = get(res, name, phase, key)
            if not st:
                continue
            b = get(res, peer(name), phase, key, "p50")
            ratio = f"{st['p50'] / b:.1f}" if b else ""
            print(f"  {label if first else '':<34} {name:<17} {st['p50']:>8.2f} {st['p95']:>8.2f} {st['p99']:>8.2f} {st['max']:>8.2f} {ratio:>6}")
            first = False
    for name in names:
        ph = get(res, name, phase)
        if ph:
            print(f"  {name}: {ph['complete']}/{ph['workflows']} complete in {ph['wall_s']} s, "
                  f"server CPU {ph['server_cpu_ms_per_workflow']:.2f} ms per workflow")
    print()
for name, r in res.items():
    extra = f", subscribe {r['subscribe_s']} s" if "subscribe_s" in r else ""
    print(f"{name}: {n} connections in {r['connect_s']} s{extra}; errors {r['errors']}")
PY
