#!/usr/bin/env python3
"""A one-port 802.1Q switch for the VLAN boot test, because the test
machine's kernel has neither 8021q nor bridge VLAN filtering.

It joins a QEMU VM (its `-netdev dgram` UDP socket) to a tap device on the
lab bridge:
  VM -> bridge: frames tagged with VID lose the tag; other VLANs are
      dropped; untagged frames pass, except IPv4 and ARP from the VLAN's
      subnet (so a VM that forgot its VLAN gets nowhere).
  bridge -> VM: IPv4 to, and ARP for, the VLAN's subnet get the tag;
      everything else (the untagged PXE/iPXE boot) passes as is.

Usage: vlan_relay.py TAP VM_PORT RELAY_PORT VID SUBNET   (in the lab's namespace)
"""
import fcntl
import ipaddress
import os
import select
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def in_subnet(frame, subnet, ip_at, arp_at):
    kind = frame[12:14]
    if kind == b"\x08\x00" and len(frame) >= ip_at + 4:
        return ipaddress.ip_address(frame[ip_at : ip_at + 4]) in subnet
    if kind == b"\x08\x06" and len(frame) >= arp_at + 4:
        return ipaddress.ip_address(frame[arp_at : arp_at + 4]) in subnet
    return False


def main():
    tap_name, vm_port, relay_port, vid, subnet = sys.argv[1:6]
    vm_port, relay_port, vid = int(vm_port), int(relay_port), int(vid)
    subnet = ipaddress.ip_network(subnet)
    tap = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH", tap_name.encode(), IFF_TAP | IFF_NO_PI))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", relay_port))
    vm = ("127.0.0.1", vm_port)
    print("relay ready", flush=True)
    while True:
        ready, _, _ = select.select([tap, udp], [], [])
        if udp in ready:
            frame = udp.recv(65536)
            if frame[12:14] == b"\x81\x00":
                if struct.unpack("!H", frame[14:16])[0] & 0xFFF != vid:
                    continue
                frame = frame[:12] + frame[16:]
            elif in_subnet(frame, subnet, 26, 28):
                # Source address (IPv4 at 26, ARP sender at 28) in the VLAN.
                continue
            os.write(tap, frame)
        if tap in ready:
            frame = os.read(tap, 65536)
            # Destination (IPv4 at 30, ARP target at 38) in the VLAN.
            if in_subnet(frame, subnet, 30, 38):
                frame = frame[:12] + struct.pack("!HH", 0x8100, vid) + frame[12:]
            udp.sendto(frame, vm)


if __name__ == "__main__":
    main()
