"""`python -m locmoe_ms COMMAND ARGS`: the console entry points (cli.py) for a checkout that is not installed, as the
launchers' ranks import locmoe_ms from PYTHONPATH. COMMAND is train, eval or check-config."""
from __future__ import annotations

import sys

from locmoe_ms.cli import check_config_main, eval_main, train_main

COMMANDS = {"train": train_main, "eval": eval_main, "check-config": check_config_main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"error: python -m locmoe_ms: command = {argv[0] if argv else ''!r}: must be one of "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
