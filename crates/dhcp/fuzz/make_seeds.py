#!/usr/bin/env python3
"""Writes seed inputs for the `respond` fuzz target: one selector byte
(mode, port, config variant; see fuzz_targets/respond.rs), then a DHCP
request. Run from this directory: python3 make_seeds.py"""
import os
import struct


def packet(mac_last, msg_type, options, ciaddr=b"\0" * 4, giaddr=b"\0" * 4, flags=0):
    header = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x1234, 0, flags)
    header += ciaddr + b"\0" * 8 + giaddr
    header += bytes([2, 0, 0, 0, 0, mac_last]) + b"\0" * 10 + b"\0" * 192
    body = bytes([99, 130, 83, 99, 53, 1, msg_type])
    for code, value in options:
        body += bytes([code, len(value)]) + value
    return header + body + b"\xff"


PXE7 = [(60, b"PXEClient:Arch:00007:UNDI:003016"), (93, b"\x00\x07"), (94, b"\x01\x03\x10"),
        (97, b"\x00" + bytes(range(16))), (55, bytes([1, 3, 6, 43, 60, 66, 67, 97]))]
SEEDS = {
    "discover-plain": (0, packet(0, 1, [(55, bytes([1, 3, 6, 12, 15, 28, 42]))])),
    "discover-pxe-uefi": (0, packet(1, 1, PXE7)),
    "discover-pxe-bios-proxy": (1, packet(0, 1, [(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, b"\x00\x00")])),
    "discover-http": (2, packet(0, 1, [(60, b"HTTPClient:Arch:00016:UNDI:003001"), (93, b"\x00\x10")])),
    "discover-ipxe": (66, packet(0, 1, PXE7 + [(77, b"iPXE"), (175, b"\xb1\x05\x01\x80\x86\x10\x0e")])),
    "request-selecting": (0, packet(0, 3, [(50, bytes([10, 66, 0, 10])), (54, bytes([10, 66, 0, 1])), (57, b"\x05\xdc")])),
    "request-wrong-ip": (0, packet(0, 3, [(50, bytes([10, 66, 0, 99]))])),
    "request-4011": (9, packet(1, 3, PXE7, ciaddr=bytes([10, 66, 0, 50]))),
    "inform": (0, packet(0, 8, [], ciaddr=bytes([10, 66, 0, 10]))),
    "decline": (0, packet(0, 4, [(50, bytes([10, 66, 0, 10]))])),
    "relayed": (0, packet(0, 1, PXE7 + [(82, b"\x01\x04eth7\x02\x06" + b"\x02\x66\x00\x00\x00\x01")], giaddr=bytes([10, 77, 0, 1]))),
    "overload": (0, packet(0, 1, [(52, b"\x01")])),
}

os.makedirs("seeds/respond", exist_ok=True)
for name, (selector, data) in SEEDS.items():
    with open(os.path.join("seeds/respond", name), "wb") as f:
        f.write(bytes([selector]) + data)
