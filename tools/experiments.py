#!/usr/bin/env python3
"""Run one suite of the paper-findings experiments: one locmoe-train run per arm and seed, resumable.

    python tools/experiments.py --suite routers|locality|capacity|health [--steps N] [--seeds 0,1] [--arms a,b]

Each run writes OUTPUT_DIR/SUITE/ARM-sSEED/{config.json, metrics.jsonl, summary.json, checkpoints/}. Finished runs
are skipped and interrupted ones resume from their last checkpoint, so a suite can be run in pieces (stop it at any
time; run the same command again). tools/report.py turns the run directories into docs/results/.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from locmoe_ms.config import load_config  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.experiments.runner import arm_overrides, check_same_run, state, train_run  # noqa: E402
from locmoe_ms.experiments.suites import COMMON, SUITES, run_name  # noqa: E402
from locmoe_ms.paths import output_dir  # noqa: E402


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 0 for v in values):
        raise UserInputError(f"{flag} {text}: must be comma-separated integers >= 0, for example 0,1")
    return values


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="experiments.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", required=True, choices=tuple(SUITES))
    parser.add_argument("--config", default=str(ROOT / "model_configs" / "tiny_cpu.yaml"))
    parser.add_argument("--output-dir", default="docs/results/runs", help="one SUITE/ARM-sSEED directory per run")
    parser.add_argument("--steps", type=int, help="training steps per run (default: the suite's)")
    parser.add_argument("--seeds", help="comma-separated train.seed values (default: the suite's)")
    parser.add_argument("--arms", help="comma-separated subset of the suite's arms, in the suite's order")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="applied to every run after the arm's own overrides")
    parser.add_argument("--list", action="store_true", help="print each run's state (new, partial, done) and stop")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    if args.steps is not None and args.steps < 1:
        raise UserInputError(f"--steps {args.steps}: must be >= 1")
    seeds = _int_list(args.seeds, "--seeds") if args.seeds else suite.seeds
    arms = suite.arms
    if args.arms:
        wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
        names = [a.name for a in suite.arms]
        unknown = [a for a in wanted if a not in names]
        if unknown or not wanted:
            raise UserInputError(f"--arms {args.arms}: suite {suite.name} has arms {', '.join(names)}")
        arms = tuple(a for a in suite.arms if a.name in wanted)
    steps = args.steps if args.steps is not None else suite.steps
    root = output_dir(args.output_dir, "--output-dir") / suite.name
    runs = [(arm, seed, root / run_name(arm, seed), arm_overrides(COMMON, arm.overrides, seed, steps, args.overrides))
            for seed in seeds for arm in arms]  # seed-major: a suite cut short has every arm once
    for _, _, run_dir, overrides in runs:  # every arm's config and every existing run checked before any training
        load_config(args.config, overrides)
        check_same_run(run_dir, args.config, overrides)
    if args.list:
        for _, _, run_dir, _ in runs:
            print(f"{state(run_dir):8} {run_dir}")
        return 0
    began = time.perf_counter()
    for n, (arm, seed, run_dir, overrides) in enumerate(runs, 1):
        status = state(run_dir)
        if status == "done":
            print(f"[{n}/{len(runs)}] {suite.name}/{run_dir.name}: done already", file=sys.stderr, flush=True)
            continue
        print(f"[{n}/{len(runs)}] {suite.name}/{run_dir.name}: {'resuming' if status == 'partial' else 'training'} "
              f"({' '.join(arm.overrides)}) -> {run_dir}", file=sys.stderr, flush=True)
        train_run(ROOT, args.config, run_dir, overrides)
    minutes = (time.perf_counter() - began) / 60
    print(f"suite {suite.name}: {len(runs)} runs done in {root} ({minutes:.1f} min this invocation); report: "
          f"python tools/report.py {root.parent} --output docs/results", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
