#!/usr/bin/env bash
# Builds the "operating system" the lifecycle end-to-end test installs: a
# small raw disk image that boots in BIOS mode (syslinux) and in UEFI mode
# (a unified kernel image at \EFI\BOOT\BOOTX64.EFI), made only from Debian
# packages, with no network downloads and no loop mounts (mtools).
#
# One FAT partition holds both boot paths. The installed system's init
# mounts that partition, reads /hostname (written there by the workflow's
# writefile action), brings up the network with DHCP and calls back to
# Bellows over syslog with "installed hostname=<name>", then powers off.
# CALLBACK_SYSLOG_IP `dhcp` calls back to the server that answered its DHCP
# (option 54): with several replicas, the one still alive.
#
# EFI_PATH (default EFI/BOOT/BOOTX64.EFI, the removable-media path UEFI
# firmware boots without a boot entry) puts the UEFI loader elsewhere, e.g.
# EFI/bellows/installed.efi: then only a boot manager that scans the disk,
# such as rEFInd, finds it.
#
# Usage: build-installed-disk.sh OUT.img CALLBACK_SYSLOG_IP [EFI_PATH]
set -euo pipefail
out=${1:?usage: build-installed-disk.sh OUT.img SYSLOG_IP [EFI_PATH]}
syslog_ip=${2:?usage: build-installed-disk.sh OUT.img SYSLOG_IP [EFI_PATH]}
efi_path=${3:-EFI/BOOT/BOOTX64.EFI}
case "$efi_path" in
  EFI/*/*.efi|EFI/*/*.EFI) ;;
  *) echo "build-installed-disk: EFI_PATH must look like EFI/<dir>/<name>.efi, not $efi_path" >&2; exit 1 ;;
esac
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
newest_kernel build-installed-disk
for tool in mcopy mkfs.vfat syslinux sfdisk objcopy cpio; do
  command -v "$tool" >/dev/null || { echo "build-installed-disk: needs $tool (mtools dosfstools syslinux fdisk binutils cpio)" >&2; exit 1; }
done
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
[ -f "$stub" ] || { echo "build-installed-disk: needs $stub (systemd-boot-efi)" >&2; exit 1; }
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || { echo "build-installed-disk: needs $mbr (syslinux-common)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,proc,sys,dev,tmp,mnt,lib/modules}
busybox_root "$root"
# Modules in load order: the virtio disk and NIC, and FAT with its code pages.
mods="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk fat vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859-1 e1000"
# shellcheck disable=SC2086
copy_modules "$root" "$kver" $mods
cat > "$root/udhcpc.script" <<'SCRIPT'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "$ip" > /tmp/ip
    echo "$serverid" > /tmp/serverid ;;
esac
exit 0
SCRIPT
cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in \$(cat /lib/modules/order); do
  insmod /lib/modules/\$m.ko 2>/dev/null
done
sleep 1
name=unknown
for dev in /dev/vda1 /dev/sda1; do
  [ -b \$dev ] || continue
  mount -t vfat -o ro \$dev /mnt && name=\$(cat /mnt/hostname 2>/dev/null || echo missing) && umount /mnt && break
done
echo "installed system: hostname=\$name"
iface=\$(ls /sys/class/net | grep -v '^lo\$' | head -1)
ip link set lo up
ip link set "\$iface" up
udhcpc -i "\$iface" -n -q -t 10 -T 2 -s /udhcpc.script
callback="$syslog_ip"
[ "\$callback" != dhcp ] || callback=\$(cat /tmp/serverid 2>/dev/null)
syslogd -R "\$callback:514"
sleep 1
for i in 1 2 3; do logger -t installed "installed hostname=\$name ip=\$(cat /tmp/ip 2>/dev/null)"; sleep 1; done
poweroff -f
INIT
chmod +x "$root/init" "$root/udhcpc.script"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.img"
cp "$kernel" "$work/vmlinuz"

# UEFI: one PE file with kernel, initrd and command line (systemd's stub).
cmdline="console=ttyS0,115200 panic=10"
printf '%s' "$cmdline" > "$work/cmdline.txt"
printf 'NAME="Bellows e2e installed system"\nID=bellows-e2e\n' > "$work/os-release"
objcopy \
  --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$work/cmdline.txt" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$work/vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$work/initrd.img" --change-section-vma .initrd=0x3000000 \
  "$stub" "$work/BOOTX64.EFI"

# BIOS: syslinux on the same FAT partition.
cat > "$work/syslinux.cfg" <<CFG
DEFAULT installed
PROMPT 0
TIMEOUT 0
LABEL installed
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $cmdline
CFG

size_mb=64
part_mb=$((size_mb - 1))
part=$work/part.img
mkfs.vfat -C -F 32 -n BELLOWS "$part" $((part_mb * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
efi_dir=${efi_path%/*}
mmd -i "$part" ::/EFI "::/$efi_dir"
mcopy -i "$part" "$work/BOOTX64.EFI" "::/$efi_path"
mcopy -i "$part" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg" ::/
echo "not yet installed" > "$work/hostname"
mcopy -i "$part" "$work/hostname" ::/hostname
syslinux --install "$part"

truncate -s 0 "$out"
truncate -s ${size_mb}M "$out"
printf 'label: dos\nstart=2048, type=c, bootable\n' | sfdisk --quiet "$out"
dd if="$part" of="$out" bs=1M seek=1 conv=notrunc status=none
dd if="$mbr" of="$out" bs=440 count=1 conv=notrunc status=none
echo "build-installed-disk: $out (${size_mb} MiB; kernel $kver; BIOS syslinux + UEFI $(du -h "$work/BOOTX64.EFI" | cut -f1) UKI at $efi_path)"
