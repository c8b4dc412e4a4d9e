#!/usr/bin/env bash
# Builds Bellows and runs the server on its embedded store, with no
# configuration: data in ./bellows-data, API on http://127.0.0.1:42113.
# Extra arguments go to `bellows server` (see `bellows server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
cargo build --release --locked -p bellows
exec target/release/bellows server "$@"
