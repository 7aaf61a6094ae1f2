#!/usr/bin/env python3
"""Tokenize, split and pack a config's corpus into DIR/{train,valid,test}.mindrecord for training to read.

Train on the result with: locmoe-train --config CONFIG --set data.corpus=mindrecord --set "data.paths=[DIR]"
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from locmoe_ms.config import ConfigError, load_config  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.paths import output_dir  # noqa: E402


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="preprocess_data.py", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (its data section and model.seq_length)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--output", required=True, help="a new directory for the three .mindrecord files")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    output_dir(args.output, "--output")
    if Path(args.output).exists():
        raise UserInputError(f"--output {args.output}: already exists; choose a new directory (nothing is "
                             f"overwritten)")
    if cfg.data.corpus == "mindrecord":
        raise ConfigError("data.corpus = 'mindrecord': already packed; name the source corpus to preprocess")
    from locmoe_ms.data.mindrecord import write_splits
    from locmoe_ms.data.dataset import prepare_data
    splits = prepare_data(cfg)
    write_splits(splits, Path(args.output))
    for name, split in splits.items():
        print(f"{Path(args.output) / (name + '.mindrecord')}: {len(split)} sequences of {cfg.model.seq_length + 1} "
              f"tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
