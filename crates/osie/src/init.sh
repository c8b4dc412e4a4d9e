#!/bin/sh
# Bellows in-memory OS: /init, process 1 (busybox sh). Written by
# `bellows image build`; README "In-memory OS" describes it.
#
# It mounts the kernel file systems, loads the drivers for the hardware
# present, brings up the boot NIC (DHCP, or a static address; optionally on
# a VLAN), sends the kernel log and its own to the server's syslog, and
# runs `bellows worker`, restarting it if it ever exits. It never exits.
#
# Kernel command line read here (the worker reads bellows.api= and
# bellows.worker_id= itself; crates/model/src/boot.rs, KernelArgs, is the
# contract and a test checks this script reads it the same way):
#   bellows.worker_id=MAC        the boot NIC (else hw_addr=MAC, else
#                                BOOTIF=01-aa-bb-cc-dd-ee-ff)
#   bellows.syslog=HOST[:PORT]   remote syslog (port 514 by default)
#   vlan_id=ID                   tag the boot NIC's traffic with VLAN ID (the
#                                record's dhcp.vlan_id, as smee writes it)
#   bellows.vlan=ID              the same, when there is no vlan_id= (a
#                                server-wide default in --kernel-args)
#   ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1
#                                static address (the kernel's nfsroot format)
#   bellows.ip=ADDR/PREFIX bellows.gw=GW bellows.dns=IP[,IP]
#                                static address (wins over ip=)
#   bellows.modules=MOD[,MOD]    more modules to load at boot
#   bellows.debug                a shell on the console
# Without a static address it asks DHCP (udhcpc).

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

KERNEL_RELEASE='@KERNEL_RELEASE@'
EAGER_MODULES='@EAGER_MODULES@'
WORKER=/usr/bin/bellows
UDHCPC_SCRIPT=/usr/share/bellows/udhcpc.script
RUN=/run/bellows
CONSOLE=/dev/console
if [ "$$" != 1 ] && [ "${BELLOWS_INIT_TEST:-}" = 1 ]; then
  # Tests source this file to call its functions.
  CONSOLE=/dev/null
  RUN=${TEST_RUN:-/nonexistent}
fi
CMDLINE=''
SYSLOG_READY=''

# log MESSAGE: to the console, the boot log, and syslog once it runs.
log() {
  _up=$(cut -d' ' -f1 /proc/uptime 2>/dev/null)
  echo "bellows-osie: [${_up:-?}] $*" >"$CONSOLE" 2>/dev/null
  [ -d "$RUN" ] && echo "[${_up:-?}] $*" >>"$RUN/osie.log"
  [ -n "$SYSLOG_READY" ] && logger -t bellows-osie "$*" 2>/dev/null
  return 0
}

lower() { echo "$1" | tr 'A-F' 'a-f'; }

# cmdline_arg NAME: the value of the last NAME=VALUE on the command line.
cmdline_arg() {
  _val=''
  set -f
  for _word in $CMDLINE; do
    case "$_word" in "$1="*) _val=${_word#*=} ;; esac
  done
  set +f
  echo "$_val"
}

# cmdline_flag NAME: true for NAME, or NAME=VALUE other than 0/no/false/off.
cmdline_flag() {
  _set=1
  set -f
  for _word in $CMDLINE; do
    case "$_word" in
      "$1") _set=0 ;;
      "$1="*)
        case "${_word#*=}" in
          0 | no | false | off | '') _set=1 ;;
          *) _set=0 ;;
        esac
        ;;
    esac
  done
  set +f
  return $_set
}

is_mac() { echo "$1" | grep -qiE '^([0-9a-f]{2}:){5}[0-9a-f]{2}$'; }

is_ipv4() { echo "$1" | grep -qE '^[0-9]{1,3}(\.[0-9]{1,3}){3}$'; }

# boot_mac: the boot NIC's MAC (lower case) from bellows.worker_id=,
# hw_addr= or BOOTIF=01-aa-bb-cc-dd-ee-ff; empty if none names one.
boot_mac() {
  for _id in "$(cmdline_arg bellows.worker_id)" "$(cmdline_arg hw_addr)"; do
    if is_mac "$_id"; then
      lower "$_id"
      return 0
    fi
  done
  _bootif=$(cmdline_arg BOOTIF)
  case "$_bootif" in
    01-*)
      _mac=$(echo "${_bootif#01-}" | tr '-' ':')
      is_mac "$_mac" && lower "$_mac"
      ;;
  esac
  return 0
}

# mask_to_prefix 255.255.255.0 → 24 (a bare prefix length is kept).
mask_to_prefix() {
  case "$1" in
    *.*.*.*) ;;
    *[!0-9]* | '') return 1 ;;
    *)
      [ "$1" -le 32 ] || return 1
      echo "$1"
      return 0
      ;;
  esac
  _bits=0
  _zero=''
  _oldifs=$IFS
  IFS=.
  # shellcheck disable=SC2086
  set -- $1
  IFS=$_oldifs
  for _octet in "$@"; do
    case "$_octet" in
      255) _n=8 ;; 254) _n=7 ;; 252) _n=6 ;; 248) _n=5 ;;
      240) _n=4 ;; 224) _n=3 ;; 192) _n=2 ;; 128) _n=1 ;; 0) _n=0 ;;
      *) return 1 ;;
    esac
    # Once a bit is clear, every later one must be.
    if [ -n "$_zero" ] && [ "$_n" -ne 0 ]; then return 1; fi
    [ "$_n" -lt 8 ] && _zero=1
    _bits=$((_bits + _n))
  done
  echo "$_bits"
}

# net_from_cmdline: sets NET_MODE (static or dhcp) and, for static,
# NET_ADDR NET_PREFIX NET_GW NET_DNS; NET_HOST and NET_DEV from ip=.
net_from_cmdline() {
  NET_MODE=dhcp NET_ADDR='' NET_PREFIX='' NET_GW='' NET_DNS='' NET_HOST='' NET_DEV=''
  _bip=$(cmdline_arg bellows.ip)
  _kip=$(cmdline_arg ip)
  if [ -n "$_bip" ]; then
    NET_ADDR=${_bip%/*}
    case "$_bip" in */*) NET_PREFIX=${_bip#*/} ;; *) NET_PREFIX=24 ;; esac
    NET_GW=$(cmdline_arg bellows.gw)
    NET_DNS=$(cmdline_arg bellows.dns | tr ',' ' ')
    if is_ipv4 "$NET_ADDR" && mask_to_prefix "$NET_PREFIX" >/dev/null; then
      NET_MODE=static
    else
      log "ignoring bellows.ip=$_bip: write it as ADDRESS/PREFIX (10.0.0.5/24)"
    fi
    return 0
  fi
  case "$_kip" in
    '' | dhcp | on | any | both | bootp | rarp | off | none) return 0 ;;
  esac
  _oldifs=$IFS
  IFS=:
  set -f
  # shellcheck disable=SC2086
  set -- $_kip
  set +f
  IFS=$_oldifs
  # CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1
  NET_HOST=$5 NET_DEV=$6
  if [ -n "$1" ]; then
    if is_ipv4 "$1" && _prefix=$(mask_to_prefix "${4:-255.255.255.0}"); then
      NET_MODE=static NET_ADDR=$1 NET_GW=$3 NET_PREFIX=$_prefix
      NET_DNS=$(echo "$8 $9" | sed 's/^ *//; s/ *$//')
    else
      log "ignoring ip=$_kip: CLIENT and NETMASK must be IPv4 (10.0.0.5::10.0.0.1:255.255.255.0)"
    fi
  fi
  return 0
}

# vlan_ifname IFACE ID: IFACE.ID, or vlanID when that is too long for a
# Linux interface name (15 characters).
vlan_ifname() {
  _name="$1.$2"
  [ ${#_name} -le 15 ] || _name="vlan$2"
  echo "$_name"
}

# boot_vlan: the VLAN word to use, as "WORD=ID": vlan_id= (the machine's
# record) when set, else bellows.vlan= (the server-wide default); empty if
# neither. The ID is checked by the caller (valid_vlan).
boot_vlan() {
  _v=$(cmdline_arg vlan_id)
  if [ -n "$_v" ]; then
    echo "vlan_id=$_v"
    return 0
  fi
  _v=$(cmdline_arg bellows.vlan)
  [ -z "$_v" ] || echo "bellows.vlan=$_v"
}

valid_vlan() {
  case "$1" in '' | *[!0-9]*) return 1 ;; esac
  [ "$1" -ge 1 ] && [ "$1" -le 4094 ]
}

# syslog_target HOST[:PORT] → HOST:PORT (514 by default).
syslog_target() {
  case "$1" in
    '') return 1 ;;
    *:*) echo "$1" ;;
    *) echo "$1:514" ;;
  esac
}

# worker_pause N: seconds to wait before the Nth restart (2, 4, 8, 16, 30…).
worker_pause() {
  _secs=2
  _i=1
  while [ "$_i" -lt "$1" ] && [ "$_secs" -lt 30 ]; do
    _secs=$((_secs * 2))
    _i=$((_i + 1))
  done
  [ "$_secs" -gt 30 ] && _secs=30
  echo "$_secs"
}

mount_basics() {
  mkdir -p /proc /sys /dev /run /tmp
  mount -t proc -o nosuid,nodev,noexec proc /proc
  mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
  mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
  # crun (container actions) wants the unified cgroup hierarchy.
  mkdir -p /sys/fs/cgroup
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup 2>/dev/null
  mkdir -p /dev/pts /dev/shm
  mount -t devpts -o nosuid,noexec,mode=620 devpts /dev/pts
  mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
  mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
  mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
  [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
  mkdir -p "$RUN" /var/log /var/lib/bellows-worker
  : >"$RUN/osie.log"
  # The kernel asks this program for modules it needs (fs-ext4, rtnl-link-vlan).
  [ -w /proc/sys/kernel/modprobe ] && echo /sbin/modprobe >/proc/sys/kernel/modprobe
  return 0
}

# load_hardware_modules: the drivers for every device present, as udev
# would load them: each new /sys/.../modalias through modprobe (which
# matches modules.alias), again after each round because bus drivers add
# devices (PCI → virtio), until a round finds nothing new.
load_hardware_modules() {
  [ -s "$RUN/modalias.done" ] || echo - >"$RUN/modalias.done"
  _round=0
  while [ "$_round" -lt 6 ]; do
    _round=$((_round + 1))
    cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u >"$RUN/modalias.now"
    awk 'NR == FNR { seen[$0] = 1; next } !($0 in seen)' \
      "$RUN/modalias.done" "$RUN/modalias.now" >"$RUN/modalias.new"
    [ -s "$RUN/modalias.new" ] || break
    while read -r _alias; do
      modprobe -q -b "$_alias" 2>/dev/null
    done <"$RUN/modalias.new"
    cat "$RUN/modalias.new" >>"$RUN/modalias.done"
  done
}

# load_modules: the modules named by bellows.modules=, then the drivers
# for the hardware present (the NIC must be there before the network).
load_modules() {
  for _m in $(cmdline_arg bellows.modules | tr ',' ' '); do
    modprobe -q "$_m" 2>/dev/null || log "module $_m (bellows.modules=) did not load"
  done
  load_hardware_modules
  log "drivers loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
}

# load_eager_modules: file systems, VLANs and their soft dependencies, in
# the background once the network is up. The kernel would also ask
# /sbin/modprobe for each when first used (fs-ext4, crypto-crc32c,
# rtnl-link-vlan); loading them ahead keeps that off the actions' time.
load_eager_modules() {
  for _m in $EAGER_MODULES; do
    modprobe -q "$_m" 2>/dev/null
  done
}

# The interfaces that are Ethernet (type 1) and real (not lo, VLANs).
ethernet_ifaces() {
  for _dir in /sys/class/net/*; do
    _n=${_dir##*/}
    [ "$(cat "$_dir/type" 2>/dev/null)" = 1 ] || continue
    [ -e "$_dir/device" ] || continue
    echo "$_n"
  done
}

iface_by_mac() {
  for _dir in /sys/class/net/*; do
    [ -r "$_dir/address" ] || continue
    if [ "$(lower "$(cat "$_dir/address")")" = "$1" ]; then
      echo "${_dir##*/}"
      return 0
    fi
  done
  return 1
}

# choose_iface: ip='s DEVICE, else the NIC with the boot MAC, else the first
# NIC whose link comes up, else the first NIC.
choose_iface() {
  if [ -n "$NET_DEV" ] && [ -e "/sys/class/net/$NET_DEV" ]; then
    echo "$NET_DEV"
    return 0
  fi
  _mac=$(boot_mac)
  if [ -n "$_mac" ]; then
    _tick=0
    while [ "$_tick" -lt 100 ]; do
      iface_by_mac "$_mac" && return 0
      [ $((_tick % 20)) = 19 ] && load_hardware_modules
      sleep 0.1
      _tick=$((_tick + 1))
    done
    log "no interface has MAC $_mac; using the first one with a link"
  fi
  [ -n "$(ethernet_ifaces)" ] || return 0
  for _i in $(ethernet_ifaces); do ip link set "$_i" up 2>/dev/null; done
  _tick=0
  while [ "$_tick" -lt 150 ]; do
    for _i in $(ethernet_ifaces); do
      if [ "$(cat "/sys/class/net/$_i/carrier" 2>/dev/null)" = 1 ]; then
        echo "$_i"
        return 0
      fi
    done
    sleep 0.1
    _tick=$((_tick + 1))
  done
  ethernet_ifaces | head -n 1
}

wait_carrier() {
  _tick=0
  while [ "$_tick" -lt 100 ]; do
    [ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null)" = 1 ] && return 0
    sleep 0.1
    _tick=$((_tick + 1))
  done
  log "$1 has no link after 10 s; trying anyway"
}

write_resolv() {
  [ -n "$1" ] || return 0
  : >/etc/resolv.conf
  for _s in $1; do echo "nameserver $_s" >>/etc/resolv.conf; done
}

setup_network() {
  ip link set lo up
  net_from_cmdline
  IFACE=$(choose_iface)
  if [ -z "$IFACE" ]; then
    log "no network interface (is its driver in the image? bellows image build --extra-module NAME)"
    return 1
  fi
  ip link set "$IFACE" up
  log "boot interface $IFACE ($(cat "/sys/class/net/$IFACE/address" 2>/dev/null), driver $(basename "$(readlink "/sys/class/net/$IFACE/device/driver" 2>/dev/null)" 2>/dev/null))"
  _vword=$(boot_vlan)
  _vlan=${_vword#*=}
  if [ -n "$_vword" ]; then
    if valid_vlan "$_vlan"; then
      modprobe -q 8021q 2>/dev/null
      _vif=$(vlan_ifname "$IFACE" "$_vlan")
      [ -e "/sys/class/net/$_vif" ] || ip link add link "$IFACE" name "$_vif" type vlan id "$_vlan"
      if [ -e "/sys/class/net/$_vif" ]; then
        IFACE=$_vif
        ip link set "$IFACE" up
        log "VLAN $_vlan on $IFACE (${_vword%%=*}=)"
      else
        log "cannot create VLAN $_vlan on $IFACE; going on untagged"
      fi
    else
      log "ignoring $_vword: not a VLAN id (1-4094); going on untagged"
    fi
  fi
  wait_carrier "$IFACE"
  [ -n "$NET_HOST" ] && hostname "$NET_HOST"
  if [ "$NET_MODE" = static ]; then
    log "static address $NET_ADDR/$NET_PREFIX gateway ${NET_GW:-none} on $IFACE"
    ip -4 addr flush dev "$IFACE"
    ip addr add "$NET_ADDR/$NET_PREFIX" dev "$IFACE" || return 1
    [ -n "$NET_GW" ] && ip route add default via "$NET_GW" dev "$IFACE"
    write_resolv "$NET_DNS"
    echo "$NET_ADDR" >"$RUN/ip"
    return 0
  fi
  _try=1
  while [ "$_try" -le 3 ]; do
    log "DHCP on $IFACE (attempt $_try of 3)"
    # -n: give up after the -t tries; it stays in the background to renew.
    if udhcpc -i "$IFACE" -s "$UDHCPC_SCRIPT" -p "$RUN/udhcpc.pid" \
      -t 5 -T 2 -A 2 -n -V bellows-osie >/dev/null 2>&1; then
      log "DHCP: $(cat "$RUN/ip" 2>/dev/null) on $IFACE"
      write_resolv "$(cmdline_arg bellows.dns | tr ',' ' ')"
      return 0
    fi
    _try=$((_try + 1))
  done
  return 1
}

start_syslog() {
  _target=$(syslog_target "$(cmdline_arg bellows.syslog)")
  if [ -n "$_target" ]; then
    # -L: also keep a local copy (logread), -C: in a 256 KiB ring.
    syslogd -R "$_target" -L -C256 || syslogd -R "$_target"
    log "syslog to $_target"
  else
    syslogd -C256
  fi
  # The kernel log from the start of the boot, then as it comes.
  klogd
  SYSLOG_READY=1
  # What this script said before syslog ran.
  logger -t bellows-osie <"$RUN/osie.log"
}

debug_shell() {
  cmdline_flag bellows.debug || return 0
  log "bellows.debug: a shell on the console"
  (
    while :; do
      setsid cttyhack sh -l
      sleep 1
    done
  ) <"$CONSOLE" >"$CONSOLE" 2>&1 &
}

run_worker() {
  _run=0
  while :; do
    _run=$((_run + 1))
    _started=$(cut -d. -f1 /proc/uptime)
    log "starting bellows worker (run $_run)"
    rm -f "$RUN/worker.status"
    # Its log to the console and, line by line, to syslog.
    {
      "$WORKER" worker --container-runtime auto 2>&1
      echo $? >"$RUN/worker.status"
    } | tee "$CONSOLE" | logger -t bellows-worker
    _status=$(cat "$RUN/worker.status" 2>/dev/null)
    case "$_status" in
      10) log "the worker asked for a reboot" && sync && reboot -f ;;
      11) log "the worker asked for a power-off" && sync && poweroff -f ;;
    esac
    # A worker that ran a while starts over with short pauses.
    [ $(($(cut -d. -f1 /proc/uptime) - _started)) -gt 300 ] && _run=1
    _pause=$(worker_pause "$_run")
    log "the worker exited (status ${_status:-unknown}); starting it again in ${_pause}s"
    sleep "$_pause"
  done
}

main() {
  mount_basics
  CMDLINE=$(cat /proc/cmdline)
  log "Bellows in-memory OS, kernel $(uname -r)"
  [ "$(uname -r)" = "$KERNEL_RELEASE" ] ||
    log "warning: the modules here are for kernel $KERNEL_RELEASE, this is $(uname -r)"
  load_modules
  debug_shell
  until setup_network; do
    log "no network yet; trying again in 10 s"
    sleep 10
  done
  start_syslog
  load_eager_modules &
  # Devices that appeared late (disks behind a slow controller).
  load_hardware_modules
  run_worker
}

if [ "$$" = 1 ]; then
  main
  # Process 1 must never exit: the kernel would panic.
  while :; do sleep 3600; done
elif [ "${BELLOWS_INIT_TEST:-}" != 1 ]; then
  echo "this is the Bellows in-memory OS's init; it runs as process 1" >&2
  exit 1
fi
