# shellcheck shell=bash
# Shared by the e2e image builders (sourced): the newest installed kernel,
# a busybox root, and kernel modules copied uncompressed.

# newest_kernel NAME: sets $kernel (/boot/vmlinuz-…) and $kver, or exits
# with a message naming the package; NAME prefixes the message.
newest_kernel() {
  kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
  [ -n "$kernel" ] || { echo "$1: no kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 1; }
  kver=${kernel#/boot/vmlinuz-}
}

# busybox_root ROOT: Debian's static busybox at ROOT/bin with every applet
# linked to it.
busybox_root() {
  mkdir -p "$1/bin"
  cp /bin/busybox "$1/bin/busybox"
  local applet
  for applet in $("$1/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$1/bin/$applet"
  done
}

# copy_modules ROOT KVER MODULE...: each module of kernel KVER that exists,
# with the modules it depends on, decompressed, as ROOT/lib/modules/NAME.ko,
# and their load order (dependencies first) in ROOT/lib/modules/order: the
# inits insmod them in that order. (Dependencies move between Debian point
# releases: 6.1.0-57's virtio needs virtio_ring, which it did not before.)
copy_modules() {
  local root=$1 kver=$2 m
  shift 2
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/order"
  for m in "$@"; do
    add_module "$root" "$kver" "$m" 0
  done
}

# add_module ROOT KVER NAME DEPTH: NAME after its dependencies (copy_modules).
add_module() {
  local root=$1 kver=$2 m=$3 depth=$4 f dep pattern
  grep -qx "$m" "$root/lib/modules/order" && return 0
  [ "$depth" -lt 16 ] || { echo "copy_modules: dependency chain too deep at $m" >&2; return 1; }
  pattern=$(printf '%s' "$m" | sed 's/[_-]/[_-]/g')
  f=$(find "/lib/modules/$kver" -name "$pattern.ko*" | head -1)
  [ -n "$f" ] || return 0
  for dep in $("$(command -v modinfo || echo /usr/sbin/modinfo)" -F depends "$f" | tr ',' ' '); do
    add_module "$root" "$kver" "$dep" $((depth + 1))
  done
  case "$f" in
    *.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$root/lib/modules/order"
}
