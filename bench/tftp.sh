#!/usr/bin/env bash
# TFTP MB/s and server CPU per MiB: Bellows against dnsmasq's TFTP, tftpd-hpa
# and atftpd, in the same run, same client (atftp), same files, same
# network. Prints each figure and its ratio to Bellows (peer / Bellows).
#
#   1. 50 clients at once, each fetching a 1 MiB file (blksize 1468).
#   2. One client fetching an 8 MiB file, lockstep and with windowsize W.
#   3. The fetches of 2 over a link with 1 ms added one-way delay (2 ms more
#      RTT), made by bench/tools/delayfwd (this kernel has no netem).
#
# Everything runs inside three network namespaces the script creates:
#   srv (the four servers; phases 1 and 2 use its loopback, 127.0.0.1)
#   fwd (delayfwd, bridging two veth pairs in userspace)
#   cli (the phase 3 client), 198.18.0.2 → 198.18.0.1 (srv)
# Each server and the forwarder run in their own cpuacct cgroup, so CPU time
# counts every thread and forked child (tftpd-hpa forks per transfer).
#
#   BENCH_RUNS (default 5)        repetitions of phases 1 and 2
#   BENCH_DELAY_RUNS (default 2)  repetitions of phase 3 (~75 s each)
#   BENCH_CLIENTS (default 50)    BENCH_WINDOW (default 16)
#   BENCH_DELAY_US (default 1000) one-way delay added in phase 3
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install dnsmasq-base atftp iproute2 iputils-ping ethtool libwrap0 libpcre2-8-0
if ! cargo build --release --locked -q -p bellows; then
  echo "bench: 'cargo build --locked' failed (Cargo.lock out of date?); building without --locked" >&2
  cargo build --release -q -p bellows
fi
runs=${BENCH_RUNS:-5}
delay_runs=${BENCH_DELAY_RUNS:-2}
clients=${BENCH_CLIENTS:-50}
window=${BENCH_WINDOW:-16}
delay_us=${BENCH_DELAY_US:-1000}
blksize=1468

# tftpd-hpa and atftpd conflict as Debian packages (both are "the" tftpd):
# unpack their binaries instead of installing them; nothing starts as a
# service that way.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/bellows-bench
mkdir -p "$cache"
# Each in its own tree: atftpd also ships an in.tftpd (a symlink to itself).
unpack() { # PACKAGE BINARY
  [ -x "$cache/$1/usr/sbin/$2" ] && return 0
  (cd "$cache" && { apt-get download "$1" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get download "$1" >/dev/null; }; } &&
    dpkg -x "$1"_*.deb "$1" && rm -f "$1"_*.deb)
}
unpack tftpd-hpa in.tftpd
unpack atftpd atftpd
cc -O2 -Wall -o "$cache/delayfwd" bench/tools/delayfwd.c

work=$(mktemp -d)
chmod 755 "$work" # tftpd-hpa, atftpd and dnsmasq drop to nobody
tag=bb$$
ns_srv=$tag-srv ns_cli=$tag-cli ns_fwd=$tag-fwd
namespaces=()
pids=()
cgroups=()
# cpuacct (cgroup v1) when mounted, else cgroup v2's cpu.stat.
if [ -d /sys/fs/cgroup/cpuacct ]; then cgroot=/sys/fs/cgroup/cpuacct; cgv=1
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then cgroot=/sys/fs/cgroup; cgv=2
else cgroot=/sys/fs/cgroup/unified; cgv=2
fi

cleanup() {
  local p g
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for g in "${cgroups[@]}"; do
    # Anything still in a group is a child of a server started here.
    for p in $(cat "$g/cgroup.procs" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$g" 2>/dev/null && break; sleep 0.1; done
  done
  for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cg_new() { # NAME: makes a cgroup; its path is in $cg_path
  cg_path=$cgroot/bellows-bench-$$-$1
  mkdir "$cg_path"
  cgroups+=("$cg_path")
}
cg_ns() { # CGROUP → CPU time used by everything in it, in ns
  if [ $cgv = 1 ]; then cat "$1/cpuacct.usage"
  else awk '$1 == "usage_usec" { print $2 * 1000 }' "$1/cpu.stat"
  fi
}
# spawn CGROUP NS CMD...: runs CMD in the namespace and the cgroup, in the
# background; its PID (after the execs) is in $! and in pids.
spawn() {
  local g=$1 ns=$2
  shift 2
  sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec ip netns exec "$@"' sh "$g" "$ns" "$@" &
  pids+=($!)
}
stop() { # PID: stops one process started by spawn
  local p keep=()
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# --- network: srv ⇄ [fwd: delayfwd] ⇄ cli ----------------------------------
for n in "$ns_srv" "$ns_cli" "$ns_fwd"; do
  ip netns add "$n"
  namespaces+=("$n")
  ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$n" link set lo up
done
ip link add s0 netns "$ns_srv" type veth peer name fs netns "$ns_fwd"
ip link add c0 netns "$ns_cli" type veth peer name fc netns "$ns_fwd"
ip -n "$ns_srv" addr add 198.18.0.1/24 dev s0
ip -n "$ns_cli" addr add 198.18.0.2/24 dev c0
# Checksums computed by the sender (a raw socket forwards them as they
# are), no GRO (one frame in, one frame out).
for pair in "$ns_srv s0" "$ns_cli c0" "$ns_fwd fs" "$ns_fwd fc"; do
  set -- $pair
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off gro off >/dev/null
done
ip -n "$ns_fwd" link set fs promisc on
ip -n "$ns_fwd" link set fc promisc on
cg_new fwd
fwd_cg=$cg_path
fwd_pid=
start_forwarder() { # DELAY_US
  [ -n "$fwd_pid" ] && { stop "$fwd_pid"; cat "$work/fwd.log" >&2; }
  spawn "$fwd_cg" "$ns_fwd" "$cache/delayfwd" fs fc "$1" 2>"$work/fwd.log"
  fwd_pid=$!
}
ping_rtt() { # → "min/avg/max" ms from cli to srv through the forwarder
  ip netns exec "$ns_cli" ping -n -c 20 -i 0.05 -w 10 -q 198.18.0.1 |
    awk -F'[ /]' '/^rtt/ { printf "%s/%s/%s", $7, $8, $9 }'
}

# --- files and servers -------------------------------------------------------
files=$work/files
mkdir -p "$files"
head -c 1048576 /dev/urandom >"$files/f1m"
head -c 8388608 /dev/urandom >"$files/f8m"
head -c 100 /dev/urandom >"$files/probe"
chmod -R a+rX "$files"
sum1=$(sha256sum <"$files/f1m" | cut -d' ' -f1)
sum8=$(sha256sum <"$files/f8m" | cut -d' ' -f1)

servers=(bellows dnsmasq tftpd-hpa atftpd)
declare -A port=([bellows]=6969 [dnsmasq]=69 [tftpd-hpa]=6970 [atftpd]=6971)
declare -A cg spid
for s in "${servers[@]}"; do cg_new "$s"; cg[$s]=$cg_path; done

# Servers on CPU 0 and clients on CPU 1, for every server alike: a
# lockstep transfer's cost depends on where the scheduler puts the two
# ends (a block that wakes the other core costs the server 2-3x the CPU of
# one handed over on the same core: dnsmasq 14 → 37 ticks for 8 MiB at
# blksize 512, Bellows 17 → 56); unpinned, each run drew its own placement,
# which is what made one server look slow at blksize 512 by chance. A
# client on another core is what a server on a network sees.
pin_server=() pin_client=
if [ "$(nproc)" -ge 2 ]; then pin_server=(taskset -c 0) pin_client=1; fi
export pin_client
# Phase 1's clients all come from 127.0.0.1: lift the per-address limit.
spawn "${cg[bellows]}" "$ns_srv" ${pin_server[@]+"${pin_server[@]}"} target/release/bellows server --insecure --data-dir "$work/data" \
  --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --syslog-listen off --dhcp-mode off \
  --tftp-listen 0.0.0.0:${port[bellows]} --tftp-transfers-per-client 1024 \
  --ipxe-dir "$files" 2>"$work/bellows.log"
spid[bellows]=$!
# dnsmasq: TFTP only (DNS off), always port 69; default limit is 50 transfers.
spawn "${cg[dnsmasq]}" "$ns_srv" ${pin_server[@]+"${pin_server[@]}"} dnsmasq --keep-in-foreground --conf-file=/dev/null \
  --no-resolv --no-hosts --port=0 --enable-tftp --tftp-root="$files" --tftp-max=200 \
  --pid-file="$work/dnsmasq.pid" --log-facility="$work/dnsmasq.log"
spid[dnsmasq]=$!
spawn "${cg[tftpd-hpa]}" "$ns_srv" ${pin_server[@]+"${pin_server[@]}"} "$cache/tftpd-hpa/usr/sbin/in.tftpd" -L -s "$files" \
  -a 0.0.0.0:${port[tftpd-hpa]} 2>"$work/tftpd-hpa.log"
spid[tftpd-hpa]=$!
spawn "${cg[atftpd]}" "$ns_srv" ${pin_server[@]+"${pin_server[@]}"} "$cache/atftpd/usr/sbin/atftpd" --daemon --no-fork \
  --port ${port[atftpd]} -m 200 --logfile - "$files" >"$work/atftpd.log" 2>&1
spid[atftpd]=$!

# The client side, run inside a namespace: N concurrent atftp fetches of
# FILE into OUT/1..N; prints the wall time in ns and how many failed.
fetch_many() {
  local n=$1 file=$2 host=$3 dport=$4 out=$5 i p fails=0 t0 t1
  shift 5
  local cpids=()
  t0=$(date +%s%N)
  for ((i = 1; i <= n; i++)); do
    timeout 90 ${pin_client:+taskset -c "$pin_client"} atftp "$@" -g -r "$file" -l "$out/$i" "$host" "$dport" >/dev/null 2>&1 &
    cpids+=($!)
  done
  for p in "${cpids[@]}"; do wait "$p" || fails=$((fails + 1)); done
  t1=$(date +%s%N)
  echo "$((t1 - t0)) $fails"
}
in_ns() { # NS FUNCTION ARGS...
  local ns=$1 fn=$2
  shift 2
  ip netns exec "$ns" bash -c "$(declare -f "$fn"); $fn \"\$@\"" "$fn" "$@"
}

# What each server grants for blksize and windowsize (atftp --trace).
declare -A granted
lockstep_only=()
for s in "${servers[@]}"; do
  oack=
  for _ in $(seq 1 20); do
    kill -0 "${spid[$s]}" 2>/dev/null || break
    oack=$(ip netns exec "$ns_srv" timeout 1 atftp --trace --option "blksize $blksize" \
      --option "windowsize $window" -g -r probe -l /dev/null 127.0.0.1 "${port[$s]}" 2>&1 |
      grep -m1 'received OACK' || true)
    [ -n "$oack" ] && break
    sleep 0.1
  done
  [ -n "$oack" ] || { echo "bench: $s did not answer on port ${port[$s]}" >&2; cat "$work/$s.log" >&2 || true; exit 1; }
  w=$(grep -o 'windowsize: [0-9]*' <<<"$oack" | grep -o '[0-9]*' || true)
  b=$(grep -o 'blksize: [0-9]*' <<<"$oack" | grep -o '[0-9]*' || true)
  granted[$s]="blksize ${b:-512 (refused)}, windowsize ${w:-refused → lockstep}"
  [ -n "$w" ] || lockstep_only+=("$s")
done
refusers=${lockstep_only[*]:-none}

# --- measuring ---------------------------------------------------------------
declare -A mbps cpu fcpu
failures=0
# measure KEY SERVER NS HOST N FILE SUM [atftp options]: one fetch round;
# appends MB/s (10^6 bytes/s) and server CPU ms per MiB to KEY's lists.
measure() {
  local key=$1 s=$2 ns=$3 host=$4 n=$5 file=$6 sum=$7
  shift 7
  local out=$work/out bytes c0 c1 f0 f1 wall fails bad
  rm -rf "$out"
  mkdir "$out"
  bytes=$((n * $(stat -c %s "$files/$file")))
  c0=$(cg_ns "${cg[$s]}")
  f0=$(cg_ns "$fwd_cg")
  read -r wall fails < <(in_ns "$ns" fetch_many "$n" "$file" "$host" "${port[$s]}" "$out" "$@") || true
  [ -n "${wall:-}" ] || { echo "bench: $key $s: the client driver failed" >&2; exit 1; }
  sleep 0.2 # let forked children and final ACKs settle before reading CPU
  c1=$(cg_ns "${cg[$s]}")
  f1=$(cg_ns "$fwd_cg")
  bad=$(sha256sum "$out"/* | awk -v want="$sum" '$1 != want' | wc -l)
  bad=$((bad + n - $(ls "$out" | wc -l)))
  if [ "$fails" -ne 0 ] || [ "$bad" -ne 0 ]; then
    echo "bench: $key $s: $fails clients failed, $bad files wrong" >&2
    failures=$((failures + 1))
  fi
  mbps[$key/$s]+=" $(awk -v b=$bytes -v w=$wall 'BEGIN { printf "%.2f", b * 1000 / w }')"
  cpu[$key/$s]+=" $(awk -v c=$((c1 - c0)) -v b=$bytes 'BEGIN { printf "%.3f", c / 1e6 / (b / 1048576) }')"
  fcpu[$key/$s]+=" $(awk -v c=$((f1 - f0)) -v w=$wall 'BEGIN { printf "%.1f", 100 * c / w }')"
  [ -z "${BENCH_VERBOSE:-}" ] || echo "  $key $s: wall $((wall / 1000000)) ms, cpu $(((c1 - c0) / 1000000)) ms" >&2
}
# Server order rotates each repetition so drift and warm-up spread evenly.
rotated() { # REPETITION → the servers, starting at a different one each time
  local i
  for ((i = 0; i < ${#servers[@]}; i++)); do
    echo "${servers[$(((i + $1) % ${#servers[@]}))]}"
  done
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_forwarder 0
echo "bench: phase 1 ($clients × 1 MiB) and 2 (8 MiB) on loopback, $runs runs" >&2
for ((r = 0; r < runs; r++)); do
  for s in $(rotated $r); do
    measure storm "$s" "$ns_srv" 127.0.0.1 "$clients" f1m "$sum1" --option "blksize $blksize"
    measure lock "$s" "$ns_srv" 127.0.0.1 1 f8m "$sum8" --option "blksize $blksize"
    measure win "$s" "$ns_srv" 127.0.0.1 1 f8m "$sum8" --option "blksize $blksize" --option "windowsize $window"
  done
done

# Forwarder headroom: with no delay, how fast it lets the fastest transfers go.
rtt0=$(ping_rtt)
for s in bellows atftpd; do
  measure fwd0 "$s" "$ns_cli" 198.18.0.1 1 f8m "$sum8" --option "blksize $blksize" --option "windowsize 64"
done
start_forwarder "$delay_us"
rtt1=$(ping_rtt)
echo "bench: phase 3 (+${delay_us} µs each way: ping RTT $rtt1 ms, was $rtt0), $delay_runs runs" >&2
for ((r = 0; r < delay_runs; r++)); do
  for s in $(rotated $r); do
    measure dlock "$s" "$ns_cli" 198.18.0.1 1 f8m "$sum8" --option "blksize $blksize"
    measure dwin "$s" "$ns_cli" 198.18.0.1 1 f8m "$sum8" --option "blksize $blksize" --option "windowsize $window"
  done
done
stop "$fwd_pid"
fwd_pid=
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------
# Three significant figures or so: 123, 45.6, 7.89, 0.655.
num() { awk -v x="$1" 'BEGIN { printf (x >= 100 ? "%.0f" : x >= 10 ? "%.1f" : x >= 1 ? "%.2f" : "%.3f"), x }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
spread() { # → "lo–hi"
  local lo hi
  read -r lo hi < <(tr ' ' '\n' | grep . | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }')
  echo "$(num "$lo")–$(num "$hi")"
}
table() { # KEY TITLE [fwd]: one markdown table, medians with min–max
  local key=$1 s m c mb cb
  echo
  echo "$2"
  echo
  if [ "${3:-}" = fwd ]; then
    echo "| server | MB/s | ÷ Bellows | server CPU ms/MiB | ÷ Bellows | forwarder CPU % |"
    echo "|---|---|---|---|---|---|"
  else
    echo "| server | MB/s | ÷ Bellows | server CPU ms/MiB | ÷ Bellows |"
    echo "|---|---|---|---|---|"
  fi
  mb=$(median <<<"${mbps[$key/bellows]}")
  cb=$(median <<<"${cpu[$key/bellows]}")
  for s in "${servers[@]}"; do
    [ -n "${mbps[$key/$s]:-}" ] || continue
    m=$(median <<<"${mbps[$key/$s]}")
    c=$(median <<<"${cpu[$key/$s]}")
    printf "| %s | %s (%s) | %s | %s (%s) | %s |" "$s" "$(num "$m")" "$(spread <<<"${mbps[$key/$s]}")" \
      "$(awk -v a="$m" -v b="$mb" 'BEGIN { printf "%.2f", a / b }')" \
      "$(num "$c")" "$(spread <<<"${cpu[$key/$s]}")" \
      "$(awk -v a="$c" -v b="$cb" 'BEGIN { printf "%.2f", a / b }')"
    [ "${3:-}" = fwd ] && printf " %s |" "$(num "$(median <<<"${fcpu[$key/$s]}")")"
    echo
  done
}
echo
echo "TFTP, $(date -u +%F), $(nproc) cores, load average $load_before before, $load_after after"
echo "client atftp $(atftp --version 2>&1 | grep -o '[0-9][0-9.]*' | head -1), blksize $blksize; figures: median (min–max) of the runs"
for s in "${servers[@]}"; do echo "  $s grants: ${granted[$s]}"; done
table storm "1. $clients clients at once × 1 MiB, loopback ($runs runs)"
table lock "2a. one client, 8 MiB, lockstep, loopback ($runs runs)"
table win "2b. one client, 8 MiB, windowsize $window asked (lockstep: ${refusers// /, } refuse it), loopback ($runs runs)"
echo
echo "3. through delayfwd: ping RTT ${rtt0} ms (min/avg/max) with no delay, ${rtt1} ms with +${delay_us} µs each way"
table fwd0 "3·. forwarder headroom: no delay, windowsize 64, one run" fwd
table dlock "3a. one client, 8 MiB, lockstep, +${delay_us} µs each way ($delay_runs runs)" fwd
table dwin "3b. one client, 8 MiB, windowsize $window asked (lockstep: ${refusers// /, } refuse it), +${delay_us} µs each way ($delay_runs runs)" fwd
echo
echo "forwarder (phase 3 with delay):"
sed 's/^/  /' "$work/fwd.log"
echo
echo "÷ Bellows is the peer's figure over Bellows': for MB/s above 1 means the peer"
echo "is faster, for CPU ms/MiB above 1 means the peer spends more CPU per MiB."
if [ "$failures" -ne 0 ]; then
  echo "bench: $failures measurements had failed or corrupt transfers (see above)" >&2
  exit 1
fi
