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
# decompressed, as ROOT/lib/modules/MODULE.ko (the inits insmod them in the
# order given).
copy_modules() {
  local root=$1 kver=$2 m f
  shift 2
  mkdir -p "$root/lib/modules"
  for m in "$@"; do
    f=$(find "/lib/modules/$kver" -name "$m.ko*" | head -1)
    [ -n "$f" ] || continue
    case "$f" in
      *.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
      *.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
      *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
  done
}
