#!/usr/bin/env bash
# A boot storm: N simulated machines through Bellows' whole boot path at
# once (DHCP as firmware, TFTP of iPXE, DHCP as iPXE, the script, the
# kernel and initrd, the worker's three actions), with the generator
# (`bellows-storm`, crates/storm) on the same machine. Prints, last, the
# generator's summary line; per-machine timings, completions over time and
# a chart (storm.svg) go to $BENCH_OUT (default bench/storm-out).
#
# Usage: bench/storm.sh [N]          (default 1000)
#
# The network: two namespaces the script creates and deletes, joined by a
# veth pair: `srv` (the server; sts0 10.88.0.1/16, route 10.88.128.0/17 via
# 10.88.0.2) and `cli` (the machines; stc0 10.88.0.2/16, and the whole
# 10.88.128.0/17 routed to itself, so each machine's sockets use its own
# reserved address: machine i is 10.88.128.1 + i, MAC 02:5b:00:00:xx:xx).
#
#   BENCH_RAMP_SECS (default 0: all at once)   arrivals spread over S seconds
#   BENCH_UEFI_EVERY (default 2)               every K-th machine is UEFI
#   BENCH_WHOLE_EVERY (default 100)            every K-th fetches kernel and initrd whole,
#                                              the others 64 KiB of each by Range
#   BENCH_KERNEL_MIB / BENCH_INITRD_MIB (8 / 16) sizes of the in-memory OS files served
#   BENCH_BELLOWS_LOG (default: Bellows' own default, info)
#   BENCH_VERIFY=1                             check every byte and lease (costs generator CPU)
#   BENCH_KEEP=1                               keep the work directory (server log)
#   BENCH_PERF=1                               record the server with perf (report in the work directory)
#   BENCH_PROFILE (default release)            debug: unoptimised builds, to try the script
#   BENCH_PEERS (default 1)                    then the same storm against dnsmasq (DHCP + TFTP)
#                                              and nginx (HTTP), up to the kernel and initrd
#                                              (no peer runs workers); 0 skips it
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install iproute2 ipxe
[ "${BENCH_PEERS:-1}" = 0 ] || apt_install dnsmasq-base nginx-light
n=${1:-1000}
ramp=${BENCH_RAMP_SECS:-0}
out=${BENCH_OUT:-$PWD/bench/storm-out}
profile=${BENCH_PROFILE:-release} # debug: for trying the script itself
if ! cargo build --profile "${profile/debug/dev}" --locked -q -p bellows -p bellows-storm; then
  echo "bench: 'cargo build --locked' failed (Cargo.lock out of date?); building without --locked" >&2
  cargo build --profile "${profile/debug/dev}" -q -p bellows -p bellows-storm
fi
bin=$PWD/target/$profile/bellows
storm=$PWD/target/$profile/bellows-storm

work=$(mktemp -d)
tag=st$$
ns_srv=$tag-srv ns_cli=$tag-cli
namespaces=()
pids=()
cleanup() {
  local p ns
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$ns_srv" "$ns_cli"; do namespaces+=("$ns"); ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add sts0 netns "$ns_srv" type veth peer name stc0 netns "$ns_cli"
ip -n "$ns_srv" addr add 10.88.0.1/16 dev sts0
ip -n "$ns_srv" link set sts0 up
ip -n "$ns_cli" addr add 10.88.0.2/16 dev stc0
ip -n "$ns_cli" link set stc0 up
ip -n "$ns_cli" route add local 10.88.128.0/17 dev lo
# One neighbour (the storm's end of the veth) for the whole machine range.
ip -n "$ns_srv" route add 10.88.128.0/17 via 10.88.0.2 dev sts0
# As many descriptors as allowed (each machine holds a connection or two
# on both sides).
ulimit -n "$(ulimit -Hn)"

data=$work/data
mkdir -p "$data/osie"
# The in-memory OS as the server serves it: its contents do not matter to
# the storm, its sizes do (a typical kernel and a built initramfs).
head -c $((${BENCH_KERNEL_MIB:-8} << 20)) /dev/urandom >"$data/osie/vmlinuz"
head -c $((${BENCH_INITRD_MIB:-16} << 20)) /dev/urandom >"$data/osie/initramfs"

log_args=()
[ -z "${BENCH_BELLOWS_LOG:-}" ] || log_args=(--log "$BENCH_BELLOWS_LOG")
ip netns exec "$ns_srv" env ${BENCH_SERVER_ENV:-} "$bin" server --data-dir "$data" --interface sts0 \
  --public-ip 10.88.0.1 --dhcp-mode reservation --listen 127.0.0.1:42113 \
  --http-listen 10.88.0.1:8080 --syslog-listen off ${log_args[@]+"${log_args[@]}"} \
  >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 1 100); do
  grep -q 'boot URLs start with' "$work/server.log" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
grep -q 'boot URLs start with' "$work/server.log" || { echo "bench: the server did not start" >&2; tail "$work/server.log" >&2; exit 1; }

echo "bench: pushing $n machines and their workflows" >&2
ip netns exec "$ns_srv" "$storm" setup --api https://127.0.0.1:42113 \
  --token "$(cat "$data/admin.token")" --ca "$data/tls/ca.crt" \
  --machines "$n" --first-ip 10.88.128.1 --gateway 10.88.0.1

verify=()
[ -z "${BENCH_VERIFY:-}" ] || verify=(--verify "$data")
rm -rf "$out"
mkdir -p "$out"
echo "bench: storm of $n machines (ramp ${ramp} s) at $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
status=0
if [ -n "${BENCH_PERF:-}" ]; then
  perf record -F 499 -g -p "$server" -o "$work/perf.data" >/dev/null 2>&1 &
  pids+=("$!")
fi
ip netns exec "$ns_cli" "$storm" run --machines "$n" --interface stc0 --first-ip 10.88.128.1 \
  --ramp-secs "$ramp" --uefi-every "${BENCH_UEFI_EVERY:-2}" \
  --whole-files-every "${BENCH_WHOLE_EVERY:-100}" --server-pid "$server" \
  --out "$out" ${verify[@]+"${verify[@]}"} || status=$?
if [ -n "${BENCH_PERF:-}" ]; then
  kill -INT "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
  perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
    grep -v '^#' | grep '%' | head -n 40 >"$work/perf.txt" || true
  echo "bench: perf profile of the server: $work/perf.txt" >&2
fi
grep -E ' (WARN|ERROR) ' "$work/server.log" | sort | uniq -c | sort -rn | head -n 10 >&2 || true
[ "${BENCH_PEERS:-1}" != 0 ] || exit "$status"

# --- the peers: dnsmasq (DHCP + TFTP) and nginx (HTTP), same storm --------
# They answer the same machines with the same files: dnsmasq reserves each
# MAC its address and names the same iPXE binaries (served from the same
# directory), then the script URL to iPXE; nginx serves one static script
# naming the same kernel and initrd. No worker stage: a machine is done
# once it has its kernel and initrd.
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
peers=$work/peers
mkdir -p "$peers/www/osie" "$peers/tmp"
ln "$data/osie/vmlinuz" "$data/osie/initramfs" "$peers/www/osie/"
printf '#!ipxe\nkernel http://10.88.0.1:8081/osie/vmlinuz initrd=initramfs console=ttyS0\ninitrd http://10.88.0.1:8081/osie/initramfs\nboot\n' \
  >"$peers/www/auto.ipxe"
# Machine i: MAC 02:5b + i, address 10.88.128.1 + i (as `setup` pushed them).
for ((i = 0; i < n; i++)); do
  a=$((128 * 256 + 1 + i))
  printf '02:5b:%02x:%02x:%02x:%02x,10.88.%d.%d\n' $((i >> 24 & 255)) $((i >> 16 & 255)) \
    $((i >> 8 & 255)) $((i & 255)) $((a >> 8 & 255)) $((a & 255))
done >"$peers/hosts"
# Both keep root (the work directory is private to it).
cat >"$peers/dnsmasq.conf" <<CONF
user=root
port=0
interface=sts0
bind-interfaces
dhcp-range=sts0,10.88.0.0,static,255.255.0.0,86400
dhcp-hostsfile=$peers/hosts
dhcp-lease-max=$((2 * n + 100))
dhcp-leasefile=$peers/leases
dhcp-match=set:ipxe,175
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:efi64,option:client-arch,7
dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi
dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe
dhcp-boot=tag:ipxe,http://10.88.0.1:8081/auto.ipxe
enable-tftp
tftp-root=$data/ipxe
tftp-max=$((n + 100))
log-facility=$peers/dnsmasq.log
CONF
cat >"$peers/nginx.conf" <<CONF
daemon off;
user root;
worker_processes auto;
worker_rlimit_nofile $(ulimit -Hn);
pid $peers/nginx.pid;
error_log $peers/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log $peers/access.log;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $peers/tmp;
  server { listen 10.88.0.1:8081; root $peers/www; }
}
CONF
ip netns exec "$ns_srv" dnsmasq --keep-in-foreground --conf-file="$peers/dnsmasq.conf" 2>"$peers/dnsmasq.err" &
dnsmasq_pid=$!
pids+=("$dnsmasq_pid")
ip netns exec "$ns_srv" nginx -c "$peers/nginx.conf" -e "$peers/nginx-error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
sleep 1
if ! kill -0 "$dnsmasq_pid" || ! kill -0 "$nginx_pid"; then
  cat "$peers/dnsmasq.err" "$peers/nginx-error.log" >&2
  exit 1
fi
# nginx's workers are its master's children: all of them are sampled.
peer_pids=(--server-pid "$dnsmasq_pid" --server-pid "$nginx_pid")
for p in $(pgrep -P "$nginx_pid"); do peer_pids+=(--server-pid "$p"); done
echo "bench: the same storm against dnsmasq $(dnsmasq --version | head -n 1 | grep -o '[0-9][0-9.]*' | head -n 1) (DHCP + TFTP) and nginx $(nginx -v 2>&1 | grep -o '[0-9][0-9.]*') (HTTP)" >&2
peer_status=0
ip netns exec "$ns_cli" "$storm" run --machines "$n" --interface stc0 --first-ip 10.88.128.1 \
  --ramp-secs "$ramp" --uefi-every "${BENCH_UEFI_EVERY:-2}" --actions 0 \
  --whole-files-every "${BENCH_WHOLE_EVERY:-100}" "${peer_pids[@]}" \
  --out "$out/peers" ${verify[@]+"${verify[@]}"} | sed 's/^storm:/storm (dnsmasq + nginx):/' || peer_status=$?
[ "$peer_status" = 0 ] || echo "bench: the peers' storm had failures" >&2
exit "$status"
