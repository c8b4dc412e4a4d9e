#!/usr/bin/env bash
# Builds the tiny OS the network-boot end-to-end tests boot: Debian's
# kernel and an initramfs of busybox, the virtio/e1000 NIC modules and an
# init that brings up the network with DHCP, asks the metadata service who
# it is, reports over syslog, and powers off.
#
# Usage: build-test-os.sh OUTDIR   (writes OUTDIR/vmlinuz, OUTDIR/initramfs)
set -euo pipefail
out=${1:?usage: build-test-os.sh OUTDIR}
mkdir -p "$out"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
newest_kernel build-test-os
busybox=/bin/busybox
"$busybox" --list 2>/dev/null | grep -qx udhcpc || { echo "build-test-os: needs busybox-static (/bin/busybox)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,proc,sys,dev,tmp,lib/modules,etc}
busybox_root "$root"
# Field notes: Debian's 6.1 kernel has virtio_net as a module, with these deps.
copy_modules "$root" "$kver" virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev \
  virtio_pci failover net_failover virtio_net e1000
cat > "$root/udhcpc.script" <<'SCRIPT'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    echo "$ip" > /tmp/ip ;;
esac
exit 0
SCRIPT
cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko 2>/dev/null
done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}" ;; esac; done; }
syslog=$(arg bellows.syslog)
http=$(arg e2e.http)
worker=$(arg bellows.worker_id)
sleep 1
iface=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set lo up
ip link set "$iface" up
echo "e2e: DHCP on $iface"
udhcpc -i "$iface" -n -q -t 10 -T 2 -s /udhcpc.script
host=$(wget -q -O - "$http/latest/meta-data/hostname")
shost=${syslog%%:*}
sport=${syslog#*:}
[ "$sport" = "$syslog" ] && sport=514
msg="booted worker=$worker ip=$(cat /tmp/ip 2>/dev/null) hostname=$host"
echo "e2e: $msg"
# Remote syslog the way the in-memory OS sends its console log: busybox
# syslogd forwarding to the server's receiver.
syslogd -R "$shost:$sport"
sleep 1
for i in 1 2 3; do logger -t e2e "$msg"; sleep 1; done
poweroff -f
INIT
chmod +x "$root/init" "$root/udhcpc.script"
cp "$kernel" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs"
echo "build-test-os: $out/vmlinuz ($kver) and $out/initramfs ($(du -h "$out/initramfs" | cut -f1))"
