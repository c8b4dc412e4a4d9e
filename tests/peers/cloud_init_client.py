#!/usr/bin/python3
"""Runs cloud-init's own datasource code (Debian's cloud-init package)
against a metadata URL and prints what it read as JSON.

Usage: cloud_init_client.py ec2|nocloud BASE_URL

Used by Bellows' metadata tests: a stock cloud image is pointed at Bellows
with the EC2 datasource (metadata_urls) or NoCloud-net
(ds=nocloud-net;s=BASE_URL/); this script makes the same calls without a
full boot.
"""
import json
import sys
import tempfile

from cloudinit import distros, helpers
from cloudinit.sources import DataSourceEc2, DataSourceNoCloud


def make(cls, sys_cfg):
    tmp = tempfile.mkdtemp(prefix="bellows-ci-")
    paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
    distro = distros.fetch("debian")("debian", {}, paths)
    return cls(sys_cfg, distro, paths)


def main():
    kind, base = sys.argv[1], sys.argv[2].rstrip("/")
    if kind == "ec2":
        ds = make(
            DataSourceEc2.DataSourceEc2,
            {
                "datasource": {
                    "Ec2": {
                        "strict_id": "false",
                        "metadata_urls": [base],
                        "timeout": 5,
                        "max_wait": 5,
                        "retries": 1,
                    }
                }
            },
        )
        ds.perform_dhcp_setup = False
    elif kind == "nocloud":
        ds = make(
            DataSourceNoCloud.DataSourceNoCloudNet,
            {"datasource": {"NoCloud": {"seedfrom": base + "/"}}},
        )
    else:
        sys.exit("usage: cloud_init_client.py ec2|nocloud BASE_URL")
    try:
        ok = ds.get_data()
    except Exception as e:  # NoCloud raises on a 404 seed; EC2 returns False
        print(json.dumps({"ok": False, "error": str(e)}))
        return 1
    if not ok:
        print(json.dumps({"ok": False}))
        return 1
    userdata = ds.userdata_raw
    if isinstance(userdata, bytes):
        userdata = userdata.decode()
    hostname = ds.get_hostname()
    print(
        json.dumps(
            {
                "ok": True,
                "instance_id": ds.get_instance_id(),
                "hostname": getattr(hostname, "hostname", hostname),
                "ssh_keys": sorted(ds.get_public_ssh_keys()),
                "user_data": userdata,
                "metadata": ds.metadata,
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
