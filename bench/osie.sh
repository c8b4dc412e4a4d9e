#!/usr/bin/env bash
# The in-memory OS with and without a container runtime, and with a Docker
# engine instead (as HookOS ships): initramfs size, and QEMU (TCG, BIOS)
# power-on → worker connected → first action started → done. See
# bench/README.md, "In-memory OS"; the measurement is
# crates/bellows/tests/integration/osie_bench.rs. Needs root (namespaces).
# BENCH_ROUNDS=N boots each variant N times (default 2); BENCH_VARIANTS=crun,docker
# picks variants (default: builtin,crun,docker).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
apt_install qemu-system-x86 ipxe-qemu busybox-static linux-image-amd64 cpio crun \
  docker.io docker-registry curl iproute2
cargo build --release --bin bellows-worker
BENCH_WORKER="$PWD/target/release/bellows-worker" CI=true \
  cargo nextest run -p bellows --test integration --run-ignored only \
  -E 'test(bench_in_memory_os_variants)' --no-capture 2>&1 |
  grep -E '^\|' || { echo "the benchmark failed; run it without the filter to see why" >&2; exit 1; }
