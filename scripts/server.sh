#!/usr/bin/env bash
# Builds Bellows and runs the server on its embedded store, with no
# configuration: data in ./bellows-data, API on https://127.0.0.1:42113
# (TLS with the server's own CA in ./bellows-data/tls/, which the CLI on
# this machine trusts by itself).
# Extra arguments go to `bellows server` (see `bellows server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
cargo build --release --locked -p bellows
# What machines boot: iPXE binaries (TFTP and HTTP), rEFInd for
# `--local-boot refind` on UEFI.
apt_install ipxe refind

# The in-memory OS machines boot (DATA_DIR/osie), built once from Debian's
# kernel and busybox unless an --osie-dir is given.
data_dir=${BELLOWS_DATA_DIR:-./bellows-data}
custom_osie=${BELLOWS_OSIE_DIR:-}
prev=""
for arg in "$@"; do
  case "$prev" in --data-dir) data_dir=$arg ;; --osie-dir) custom_osie=$arg ;; esac
  case "$arg" in --data-dir=*) data_dir=${arg#*=} ;; --osie-dir=*) custom_osie=${arg#*=} ;; esac
  prev=$arg
done
if [ -z "$custom_osie" ] && [ ! -f "$data_dir/osie/initramfs" ]; then
  apt_install linux-image-amd64 busybox-static crun
  target/release/bellows image build --data-dir "$data_dir" ||
    echo "warning: no in-memory OS yet; machines cannot run workflows until \`bellows image build\` succeeds" >&2
fi
exec target/release/bellows server "$@"
