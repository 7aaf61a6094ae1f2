#!/usr/bin/env python3
"""Write the HCCL rank table (version "1.0") of the devices of this server that a job uses.

The file, hccl_{n}p_{device ids}_{server ip}.json, lists each device's NIC IP and rank (counted from 0 in device
order). The NIC IPs come from --hccn_conf if given, else from `hccn_tool -i N -ip -g` when hccn_tool is on PATH,
else from /etc/hccn.conf (its address_N=IP lines). Tables of several servers: merge_hccl.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locmoe_ms.cluster.rank_table import (local_table, output_path, select_devices, table_file_name,  # noqa: E402
                                          write_table)
from locmoe_ms.errors import ArgumentParser, exits_on_bad_input  # noqa: E402


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="hccl_tools.py", description=__doc__)
    parser.add_argument("--device_num", default="[0,8)", help="half-open range of device ids, [a,b) with "
                        "0 <= a < b <= 8 (default: [0,8))")
    parser.add_argument("--visible_devices", help="comma-separated ids of the devices present, such as 0,1,2,3; "
                        "every device of --device_num must be among them (default: all 8)")
    parser.add_argument("--server_ip", help="this server's IPv4 (default: the address of its outward route)")
    parser.add_argument("--hccn_conf", help="file of address_N=IP lines (default: hccn_tool if on PATH, else "
                        "/etc/hccn.conf)")
    parser.add_argument("--output", help="directory for the table (default: the current one)")
    args = parser.parse_args(argv)
    devices = select_devices(args.device_num, args.visible_devices)
    table = local_table(devices, args.server_ip, args.hccn_conf, "--server_ip")
    path = output_path(args.output, table_file_name(table), file_allowed=False)
    write_table(table, path, [Path(args.hccn_conf)] if args.hccn_conf else [])
    print(f"wrote {path}: server {table['server_list'][0]['server_id']}, devices {','.join(map(str, devices))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
