#!/usr/bin/env bash
# DHCP exchanges/s and server CPU per exchange: Bellows against dnsmasq, Kea
# (kea-dhcp4) and ISC dhcpd, in the same run, with the same client (Kea's
# perfdhcp), the same 1,000 reservations and the same network. Prints each
# figure and its ratio to Bellows (peer / Bellows).
#
# Two ways, each server started afresh for each:
#   plain    perfdhcp on the server's segment as 1,000 clients: DISCOVER and
#            REQUEST broadcast to 255.255.255.255:67 with giaddr 0 and the
#            broadcast flag, answers broadcast to 255.255.255.255:68.
#            (perfdhcp -4 always plays a relay agent; bench/tools/
#            perfdhcp-direct.c, preloaded, clears giaddr/hops, sets the
#            broadcast flag and lets its socket receive broadcasts.)
#   relayed  perfdhcp as a relay agent: unicast from 10.91.0.1:67 with
#            giaddr 10.91.0.1 (a subnet the server reaches through a route),
#            answers unicast to 10.91.0.1:67.
# For each: the highest rate with < 1 % of DORA exchanges lost (perfdhcp -r
# doubled from 250/s until an exchange in 100 is lost, then bisected; each
# step a bounded -p run), and the server's CPU time (utime + stime of its
# process from /proc/PID/stat) per completed exchange at a fixed rate.
#
# Everything runs inside two network namespaces the script creates:
#   srv  the server, veth dhs0 10.90.0.1/16, route 10.91.0.0/16 via 10.90.0.2
#   cli  perfdhcp, veth dhc0 10.90.0.2/16 and 10.91.0.1/16 (the "relay")
# Reservations: MACs 02:90:00:00:00:00 … 02:90:00:00:03:e7, addresses in
# 10.90.0.0/16 (plain) or 10.91.0.0/16 (relayed), pushed to Bellows over its
# API; the peers' configurations come from `bellows dhcp-config`, with the
# iPXE chainload parts taken out (perfdhcp is no PXE client, and Bellows
# sends boot options only to PXE/iPXE clients): addressing only, for all.
#
#   BENCH_STEP_SECS (default 3)   length of each rate step
#   BENCH_BISECT (default 2)      bisection steps after the doubling
#   BENCH_MAX_RATE (default 32000)
#   BENCH_CPU_RATE (default 250)  BENCH_CPU_SECS (default 15)
#   BENCH_SERVERS (default "bellows dnsmasq kea isc")
#   BENCH_MODES (default "plain relayed")
#   BENCH_BELLOWS_LOG (default: Bellows' own default, info)
#   BENCH_KEEP=1                  keep the work directory (configs, logs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install kea-admin kea-dhcp4-server isc-dhcp-server dnsmasq-base iproute2 curl python3
if ! cargo build --release --locked -q -p bellows; then
  echo "bench: 'cargo build --locked' failed (Cargo.lock out of date?); building without --locked" >&2
  cargo build --release -q -p bellows
fi
step_secs=${BENCH_STEP_SECS:-3}
bisect=${BENCH_BISECT:-2}
max_rate=${BENCH_MAX_RATE:-32000}
cpu_rate=${BENCH_CPU_RATE:-250}
cpu_secs=${BENCH_CPU_SECS:-15}
servers=${BENCH_SERVERS:-bellows dnsmasq kea isc}
modes=${BENCH_MODES:-plain relayed}
bellows_log=${BENCH_BELLOWS_LOG:-}
n_hosts=1000
bin=$PWD/target/release/bellows
tck=$(getconf CLK_TCK)

work=$(mktemp -d)
tag=dh$$
ns_srv=$tag-srv ns_cli=$tag-cli
namespaces=()
pids=()
cleanup() {
  local p n
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -shared -fPIC -o "$work/perfdhcp-direct.so" bench/tools/perfdhcp-direct.c -ldl

# The network: two namespaces joined by one veth pair.
for n in "$ns_srv" "$ns_cli"; do namespaces+=("$n"); ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add dhs0 netns "$ns_srv" type veth peer name dhc0 netns "$ns_cli"
ip -n "$ns_srv" addr add 10.90.0.1/16 dev dhs0
ip -n "$ns_srv" link set dhs0 up
ip -n "$ns_cli" link set dhc0 address 02:90:ff:ff:ff:fe
ip -n "$ns_cli" addr add 10.90.0.2/16 dev dhc0
ip -n "$ns_cli" addr add 10.91.0.1/16 dev dhc0
ip -n "$ns_cli" link set dhc0 up
ip -n "$ns_srv" route add 10.91.0.0/16 via 10.90.0.2 dev dhs0

for i in $(seq 0 $((n_hosts - 1))); do printf '02:90:00:00:%02x:%02x\n' $((i / 256)) $((i % 256)); done >"$work/macs"
hardware() { # NET (90 or 91): one hardware record per line
  local i
  for i in $(seq 0 $((n_hosts - 1))); do
    printf '{"id":"m%04d","network":{"interfaces":[{"dhcp":{"mac":"02:90:00:00:%02x:%02x","hostname":"m%04d","lease_time":86400,"ip":{"address":"10.%d.%d.%d","netmask":"255.255.0.0","gateway":"10.%d.0.1"}}}]}}\n' \
      $((i + 1)) $((i / 256)) $((i % 256)) $((i + 1)) "$1" $((1 + i / 250)) $((1 + i % 250)) "$1"
  done
}

load() { # one line: load average, idle CPU and the busiest processes (0.5 s sample)
  printf 'load %s | ' "$(cut -d' ' -f1-3 /proc/loadavg)"
  top -b -n 2 -d 0.5 -w 200 | awk '/^top -/ {f++} f == 2 && /^%Cpu/ {match($0, /[0-9.]+ id/); idle = substr($0, RSTART, RLENGTH - 3)}
    f == 2 && /^ *[0-9]+ / && n < 4 && $9 > 0 {p = p $12 " " $9 "%; "; n++}
    END {print "idle " idle "% | busiest: " p}'
}

started() { # PID: our process still alive?
  kill -0 "$1" 2>/dev/null
}

udp_drops() { # NAMESPACE: datagrams the kernel dropped for want of socket buffer room
  ip netns exec "$1" awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6; exit}' /proc/net/snmp
}

cpu_ticks() { # PID: utime + stime, in clock ticks
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# run_perfdhcp MODE RATE SECS: one bounded perfdhcp run; prints "discovers acks".
run_perfdhcp() {
  local mode=$1 rate=$2 secs=$3 out=$work/perf.out
  local common=(-4 -M "$work/macs" -r "$rate" -p "$secs" -W 500000)
  if [ "$mode" = plain ]; then
    ip netns exec "$ns_cli" env LD_PRELOAD="$work/perfdhcp-direct.so" timeout $((secs + 15)) \
      perfdhcp "${common[@]}" -l 10.90.0.2 -L 68 -B 255.255.255.255 >"$out" 2>&1 || true
  else
    ip netns exec "$ns_cli" timeout $((secs + 15)) \
      perfdhcp "${common[@]}" -l 10.91.0.1 10.90.0.1 >"$out" 2>&1 || true
  fi
  awk '/Statistics for: DISCOVER-OFFER/ {s = 1} /Statistics for: REQUEST-ACK/ {s = 2}
       /^sent packets:/ && s == 1 {d = $3} /^received packets:/ && s == 2 {a = $3}
       END {print d + 0, a + 0}' "$out"
}

ready() { # MODE PID: wait (≤ 15 s) until the server completes an exchange
  local i d a
  for i in $(seq 1 15); do
    started "$2" || return 1
    read -r d a < <(run_perfdhcp "$1" 20 1)
    [ "$a" -gt 0 ] && return 0
  done
  return 1
}

# measure NAME MODE PID: rate search, then CPU at the fixed rate.
measure() {
  local name=$1 mode=$2 pid=$3 rate=250 lo=0 hi=0 best=0 best_ach=0 best_cpu=- bound=""
  local d a t0 t1 loss ok mid i
  step() { # RATE → sets ok, and best* when it passes; a failed step is run once more
    local try u0 u1 c0 c1
    for try in 1 2; do
      t0=$(cpu_ticks "$pid") u0=$(udp_drops "$ns_srv") c0=$(udp_drops "$ns_cli")
      read -r d a < <(run_perfdhcp "$mode" "$1" "$step_secs")
      t1=$(cpu_ticks "$pid") u1=$(udp_drops "$ns_srv") c1=$(udp_drops "$ns_cli")
      started "$pid" || { echo "bench: $name died" >&2; return 1; }
      loss=$(awk -v d="$d" -v a="$a" 'BEGIN {printf "%.2f", d ? 100 * (d - a) / d : 100}')
      ok=$(awk -v l="$loss" 'BEGIN {print (l < 1) ? 1 : 0}')
      printf '    %-8s %-7s r=%-6s sent %6s done %6s loss %6s%%  cpu %3s ticks  UDP buffer drops: server side %s, client side %s\n' \
        "$name" "$mode" "$1" "$d" "$a" "$loss" "$((t1 - t0))" "$((u1 - u0))" "$((c1 - c0))" >&2
      [ "$ok" = 1 ] && break
    done
    if [ "$ok" = 1 ]; then
      best=$1 best_ach=$((a / step_secs))
      best_cpu=$(awk -v t=$((t1 - t0)) -v a="$a" -v k="$tck" 'BEGIN {printf "%.0f", t * 1e6 / k / a}')
      # perfdhcp could not send at the asked rate: the client is the limit.
      if [ "$d" -lt $((${1} * step_secs * 95 / 100)) ]; then bound="client"; fi
    fi
  }
  while :; do
    step "$rate" || return 1
    if [ "$ok" = 1 ]; then lo=$rate; else hi=$rate; break; fi
    [ -n "$bound" ] && break
    [ $((rate * 2)) -gt "$max_rate" ] && break
    rate=$((rate * 2))
  done
  for i in $(seq 1 "$bisect"); do
    [ "$hi" -eq 0 ] && break
    [ -n "$bound" ] && break
    mid=$(((lo + hi) / 2))
    [ "$lo" -eq 0 ] && mid=$((hi / 2))
    [ "$mid" -le "$lo" ] && break
    step "$mid" || return 1
    if [ "$ok" = 1 ]; then lo=$mid; else hi=$mid; fi
  done
  # CPU per exchange at the same fixed rate for every server.
  t0=$(cpu_ticks "$pid")
  read -r d a < <(run_perfdhcp "$mode" "$cpu_rate" "$cpu_secs")
  t1=$(cpu_ticks "$pid")
  local cpu
  cpu=$(awk -v t=$((t1 - t0)) -v a="$a" -v k="$tck" 'BEGIN {printf "%.1f", a ? t * 1e6 / k / a : 0}')
  printf '    %-8s %-7s cpu run r=%s: sent %s done %s, %s ticks\n' "$name" "$mode" "$cpu_rate" "$d" "$a" "$((t1 - t0))" >&2
  local lost
  lost=$(awk -v d="$d" -v a="$a" 'BEGIN {printf "%.1f", d ? 100 * (d - a) / d : 100}')
  # name mode asked-rate achieved-rate client-bound cpu-us cpu-us-at-max cpu-run-loss-%
  echo "$name $mode $best $best_ach ${bound:-server} $cpu $best_cpu $lost" >>"$work/results"
}

stop() { # PID: stops a server started here, and forgets its PID
  local p left=()
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do started "$1" || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || left+=("$p"); done
  pids=(${left[@]+"${left[@]}"})
}

# Peer configurations: `bellows dhcp-config`, netboot parts removed, files
# and logs in $work.
peer_configs() { # MODE
  local url=http://127.0.0.1:42113
  for f in dnsmasq kea isc; do
    ip netns exec "$ns_srv" "$bin" dhcp-config --url "$url" --format "$f" --interface dhs0 >"$work/$1.$f.orig"
  done
  sed '/^# Two-stage chainload/,$d' "$work/$1.dnsmasq.orig" >"$work/$1.dnsmasq"
  python3 - "$work" "$1" <<'PY'
import json, sys
work, mode = sys.argv[1], sys.argv[2]
doc = json.load(open(f"{work}/{mode}.kea.orig"))
d = doc["Dhcp4"]
for k in ("option-def", "client-classes", "option-data"):
    d.pop(k, None)
d["lease-database"]["name"] = f"{work}/kea-leases4.csv"
d["loggers"] = [{"name": "kea-dhcp4", "severity": "INFO",
                 "output_options": [{"output": f"{work}/kea.log"}]}]
json.dump(doc, open(f"{work}/{mode}.kea", "w"), indent=1)
text = open(f"{work}/{mode}.isc.orig").read()
body = text[text.index("\nsubnet "):]
if "subnet 10.90.0.0 netmask 255.255.0.0" not in body:
    # dhcpd listens only on interfaces with a subnet declaration.
    body = "\nsubnet 10.90.0.0 netmask 255.255.0.0 {\n}\n" + body
open(f"{work}/{mode}.isc", "w").write("authoritative;\n" + body)
PY
  grep -c '^dhcp-host=' "$work/$1.dnsmasq" | grep -qx "$n_hosts"
  grep -c 'fixed-address' "$work/$1.isc" | grep -qx "$n_hosts"
}

start_server() { # NAME MODE: starts it, sets srv_pid
  local name=$1 mode=$2
  case $name in
    dnsmasq)
      rm -f "$work/dnsmasq.leases"
      ip netns exec "$ns_srv" dnsmasq --keep-in-foreground --conf-file="$work/$mode.dnsmasq" \
        --no-resolv --no-hosts --user=root --group=root --pid-file="$work/dnsmasq.pid" \
        --dhcp-leasefile="$work/dnsmasq.leases" --log-facility="$work/dnsmasq.log" \
        >"$work/dnsmasq.out" 2>&1 &
      ;;
    kea)
      rm -f "$work"/kea-leases4.csv*
      ip netns exec "$ns_srv" env KEA_PIDFILE_DIR="$work" KEA_LOCKFILE_DIR="$work" \
        kea-dhcp4 -c "$work/$mode.kea" >"$work/kea.out" 2>&1 &
      ;;
    isc)
      : >"$work/dhcpd.leases"
      ip netns exec "$ns_srv" dhcpd -4 -f -d -cf "$work/$mode.isc" -lf "$work/dhcpd.leases" \
        -pf "$work/dhcpd.pid" dhs0 >"$work/dhcpd.log" 2>&1 &
      ;;
  esac
  srv_pid=$!
}

start_bellows() { # starts it on $work/data, sets srv_pid
  ip netns exec "$ns_srv" "$bin" server --insecure --data-dir "$work/data" --listen 127.0.0.1:42113 \
    --http-listen 10.90.0.1:8080 --syslog-listen off --tftp-listen off --dhcp-mode reservation \
    --interface dhs0 --public-ip 10.90.0.1 --dhcp-listen 0.0.0.0:67 \
    ${bellows_log:+--log "$bellows_log"} >"$work/bellows.log" 2>&1 &
  srv_pid=$!
  pids+=("$srv_pid")
  for _ in $(seq 1 100); do
    grep -q 'DHCP server listening' "$work/bellows.log" && return 0
    started "$srv_pid" || break
    sleep 0.1
  done
  cat "$work/bellows.log" >&2
  exit 1
}

prepare() { # MODE NET: a fresh Bellows store with the mode's reservations, and the peers' configs
  local mode=$1 net=$2 count
  rm -rf "$work/data"
  start_bellows
  hardware "$net" >"$work/hardware.jsonl"
  ip netns exec "$ns_srv" xargs -d '\n' -P 4 -n 1 curl -sf -o /dev/null \
    -H 'content-type: application/json' -X POST http://127.0.0.1:42113/api/v1/hardware --data-raw <"$work/hardware.jsonl"
  count=$(ip netns exec "$ns_srv" curl -sf http://127.0.0.1:42113/api/v1/hardware |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["items"]))')
  [ "$count" = "$n_hosts" ] || { echo "bench: bellows holds $count records, not $n_hosts" >&2; exit 1; }
  peer_configs "$mode"
  stop "$srv_pid"
}

run_server() { # NAME MODE
  local name=$1 mode=$2 pid
  if [ "$name" = bellows ]; then
    start_bellows # on the store prepare() filled
  else
    start_server "$name" "$mode"
    pids+=("$srv_pid")
  fi
  pid=$srv_pid
  echo "  $(load)" >&2
  if ! ready "$mode" "$pid"; then
    echo "bench: $name does not answer ($mode); its output:" >&2
    tail -20 "$work"/"$name"*.out "$work/dhcpd.log" 2>/dev/null >&2 || true
    exit 1
  fi
  measure "$name" "$mode" "$pid"
  stop "$pid"
}

: >"$work/results"
order=(bellows dnsmasq kea isc)
for mode in $modes; do
  net=90
  [ "$mode" = relayed ] && net=91
  echo "$mode ($n_hosts reservations in 10.$net.0.0/16; order ${order[*]}):" >&2
  prepare "$mode" "$net"
  for s in "${order[@]}"; do
    [[ " $servers " == *" $s "* ]] && run_server "$s" "$mode"
  done
  # The next mode runs the servers in the opposite order, so that a burst of
  # other work on the machine does not always land on the same server.
  order=("${order[3]}" "${order[2]}" "${order[1]}" "${order[0]}")
done
echo
echo "DHCP DORA exchanges, perfdhcp -4, $n_hosts reservations, ${step_secs}s steps, < 1 % lost;"
echo "CPU = server utime+stime per completed exchange at ${cpu_rate}/s for ${cpu_secs}s (and at the max step)."
awk '
  { key = $2 SUBSEP $1; rate[key] = $4; asked[key] = $3; bound[key] = $5; cpu[key] = $6; cpumax[key] = $7; lost[key] = $8
    if (!($2 in seen)) { seen[$2] = 1; order[++m] = $2 }
  }
  END {
    k = split("bellows dnsmasq kea isc", sorder, " ")
    for (j = 1; j <= m; j++) {
      mo = order[j]; b = mo SUBSEP "bellows"
      printf "%s:\n  %-8s %9s %7s %6s %10s %7s %12s\n", mo, "server", "exch/s", "(asked)", "ratio", "CPU us/ex", "ratio", "us/ex at max"
      for (i = 1; i <= k; i++) {
        s = sorder[i]; x = mo SUBSEP s
        if (!(x in rate)) continue
        rr = (b in rate && rate[b] > 0) ? sprintf("%.2f", rate[x] / rate[b]) : "-"
        cr = (b in cpu && cpu[b] > 0) ? sprintf("%.2f", cpu[x] / cpu[b]) : "-"
        printf "  %-8s %9d %7s %6s %10s %7s %12s%s%s\n", s, rate[x], "(" asked[x] ")", rr, cpu[x], cr, cpumax[x],
          (bound[x] == "client" ? "  (perfdhcp-bound: at least)" : ""),
          (lost[x] >= 1 ? "  (" lost[x] "% lost in the CPU run)" : "")
      }
    }
    print "ratios: peer / Bellows (rate above 1: peer faster; CPU above 1: peer costlier)"
  }' "$work/results"
