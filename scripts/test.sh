#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, all tests (unit, API, CLI,
# durability, store), the Go golden comparison, and schemathesis against
# a live server's OpenAPI document, and the fuzz targets for a bounded
# time each. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
# Peers the tests run against (see README "Tests").
apt_install golang-go python3-venv curl iproute2 cloud-init dnsmasq-base kea-dhcp4-server \
  isc-dhcp-server qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static linux-image-amd64 cpio \
  tftp-hpa atftp isc-dhcp-client isc-dhcp-relay ndisc6 ipmitool openipmi apache2-utils \
  zstd xz-utils gzip e2fsprogs libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
  python3-libvirt openssl syslinux syslinux-common mtools dosfstools systemd-boot-efi \
  binutils fdisk kmod refind crun docker-registry qemu-utils postgresql postgresql-client \
  prometheus systemd util-linux chromium chromium-driver lldpd

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo deny: licences, banned crates (one TLS stack), duplicate versions, sources"
if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  # Built once from crates.io (a few minutes on 2 cores), then cached in ~/.cargo/bin.
  cargo install --locked --quiet cargo-deny --version 0.20.2
fi
cargo deny --locked check licenses bans sources
echo "== docker: a private engine for the worker's container tests"
docker_env="$(scripts/docker-test-daemon.sh)" # prints: export DOCKER_HOST=unix://...
# Leave nothing running: the engine and its containerd, and PostgreSQL,
# stop however this ends.
trap 'scripts/docker-test-daemon.sh stop; scripts/postgres-test-server.sh stop' EXIT
eval "$docker_env"
echo "== postgresql: one throwaway server for the store and replica tests"
eval "$(scripts/postgres-test-server.sh)" # prints: export BELLOWS_TEST_POSTGRES=...
echo "== tests"
# The storm test drives the server with the generator's binary, which no
# test target of its own builds.
cargo build --locked -q -p bellows-storm
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
  cargo test --locked --workspace --doc -q
else
  cargo test --locked --workspace --no-fail-fast
fi
echo "== golden: Go's text/template renders the committed outputs"
scripts/golden.sh
echo "== schemathesis: the live API conforms to its OpenAPI document"
scripts/api-conformance.sh
echo "== fuzz: every target for a bounded time (FUZZ_SECONDS, default 30)"
scripts/fuzz.sh
echo "== all checks passed"
