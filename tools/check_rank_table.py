#!/usr/bin/env python3
"""Check an HCCL rank table (version "1.0") before a job uses it: one line per problem, exit code 2 if any.

Checked: JSON object with exactly version "1.0", server_count, server_list, status "completed"; every value a string;
each server an IPv4 server_id, a non-empty device list and host_nic_ip; each device a device_id 0-7 unique in its
server, a device_ip unique in the table and a rank_id; ranks 0..N-1 in server then device order; server_count equal
to the number of servers; server ids unique; the total number of devices if --expect-devices is given.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locmoe_ms.cluster.rank_table import check_rank_table, load_rank_table, table_size  # noqa: E402
from locmoe_ms.errors import EXIT_BAD_INPUT, ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="check_rank_table.py", description=__doc__)
    parser.add_argument("table", metavar="FILE", help="the rank table")
    parser.add_argument("--expect-devices", type=int, metavar="N", help="the number of devices the job needs")
    args = parser.parse_args(argv)
    if args.expect_devices is not None and args.expect_devices < 1:
        raise UserInputError(f"--expect-devices = {args.expect_devices}: must be a positive number of devices")
    problems = check_rank_table(args.table, args.expect_devices)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    servers, devices = table_size(load_rank_table(args.table))
    print(f"ok: {args.table}: {servers} servers, {devices} devices")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
