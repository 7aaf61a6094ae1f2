#!/usr/bin/env python3
"""Merge the HCCL rank tables of several servers into one cluster table (version "1.0").

Servers keep the order of the inputs; rank_id is renumbered 0..N-1 in server then device order. Every input must
pass check_rank_table.py, and no server or device IP may appear in two inputs. The result is hccl_{S}s_{N}p.json
(S servers, N devices) in the current directory, or at --output.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locmoe_ms.cluster.rank_table import (load_rank_table, merge_tables, output_path, table_file_name,  # noqa: E402
                                          table_size, write_table)
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="merge_hccl.py", description=__doc__)
    parser.add_argument("tables", nargs="+", metavar="TABLE.json", help="rank tables, one or more servers each")
    parser.add_argument("--output", help="a directory (the file goes inside under its default name) or a file path")
    args = parser.parse_args(argv)
    if len(args.tables) < 2:
        raise UserInputError(f"merge_hccl.py {' '.join(args.tables)}: got 1 rank table; merging needs at least 2")
    inputs = [Path(name) for name in args.tables]
    table = merge_tables([(path, load_rank_table(path)) for path in inputs])
    path = output_path(args.output, table_file_name(table), file_allowed=True)
    write_table(table, path, inputs)
    servers, devices = table_size(table)
    print(f"wrote {path}: {servers} servers, {devices} devices")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
