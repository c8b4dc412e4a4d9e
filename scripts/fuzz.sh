#!/usr/bin/env bash
# Runs every fuzz target (crates/*/fuzz) for a bounded time each
# (FUZZ_SECONDS, default 30): the protocol cores must not panic on any
# datagram. Needs nightly and cargo-fuzz; installs cargo-fuzz if missing.
# A crash fails the run and leaves the input under $work for `cargo fuzz
# run TARGET FILE` to replay.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: WARNING: no nightly toolchain and none can be installed; fuzzing SKIPPED" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for dir in crates/*/fuzz; do
  crate=$(dirname "$dir")
  for target in $(cd "$crate" && cargo +nightly fuzz list); do
    corpus="$work/$(basename "$crate")-$target"
    mkdir -p "$corpus"
    seeds=()
    [ -d "$dir/seeds/$target" ] && seeds=("$PWD/$dir/seeds/$target")
    echo "fuzz: $crate $target for ${seeds:+seeded, }${seconds} s"
    (cd "$crate" && timeout $((seconds + 900)) cargo +nightly fuzz run "$target" "$corpus" \
      "${seeds[@]}" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
      -artifact_prefix="$work/" >"$work/$target.log" 2>&1) || {
      echo "fuzz.sh: $crate $target FAILED:" >&2
      tail -40 "$work/$target.log" >&2
      exit 1
    }
    grep -E '^Done [0-9]+ runs' "$work/$target.log" || tail -1 "$work/$target.log"
  done
done
