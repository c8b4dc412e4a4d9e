# Shared set-up for the README's commands: installs what Bellows needs on a
# fresh Debian 12 machine. Sourced, not run.

# apt_install PKG...: installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  if printf '%s\n' "${missing[@]}" | grep -qx refind; then
    # Bellows serves rEFInd over the network; never install it into this
    # machine's own EFI system partition.
    echo "refind refind/install_to_esp boolean false" | $sudo debconf-set-selections
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_rust: a Rust toolchain new enough for the workspace (Debian's is too old).
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    apt_install curl ca-certificates
    echo "setup: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy -c rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# Build dependencies: a C compiler for the bundled SQLite.
ensure_build_deps() {
  apt_install build-essential pkg-config
  ensure_rust
}

# package_inputs: what both package scripts start from. Sets `bin` to the
# binary to package ($BELLOWS_BIN, else a fresh release build) and
# `version` to the workspace's version.
package_inputs() {
  bin="${BELLOWS_BIN:-}"
  if [ -z "$bin" ]; then
    ensure_build_deps
    cargo build --locked --release -p bellows
    bin=target/release/bellows
  fi
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
}
