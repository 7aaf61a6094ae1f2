"""Console entry points: locmoe-train, locmoe-eval and locmoe-check-config. The top floor: argument parsing only,
the work is done by the modules below (job.py, train/evaluation.py, config.py, parallel/topology.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # MindSpore's INFO/WARNING lines would drown the progress output

import yaml  # noqa: E402

from locmoe_ms.config import ROUTER_GATES, SECTIONS, field_help, load_config  # noqa: E402
from locmoe_ms.errors import ArgumentParser, exits_on_bad_input  # noqa: E402
from locmoe_ms.paths import input_file, output_dir  # noqa: E402


def _common(parser: ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, for example model_configs/tiny_cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (parsed as YAML); repeatable")


@exits_on_bad_input
def train_main(argv: list[str] | None = None) -> int:
    """Train a PanGu-Sigma-style sparse model; metrics in OUTPUT_DIR/metrics.jsonl, checkpoints in OUTPUT_DIR/checkpoints."""
    parser = ArgumentParser(prog="locmoe-train", description=train_main.__doc__)
    _common(parser)
    parser.add_argument("--router", choices=tuple(ROUTER_GATES), help="shorthand for --set moe_config.router=NAME")
    parser.add_argument("--max-steps", type=int, help="shorthand for --set train.max_steps=N")
    parser.add_argument("--output-dir", default="runs/default", help="where metrics and checkpoints go")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    parser.add_argument("--init-from", metavar="CKPT", help="start at step 0 from the model weights of a checkpoint "
                        "(for example one that tools/convert_ckpt.py upcycle wrote), with a fresh optimizer")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.router:
        overrides.append(f"moe_config.router={args.router}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = load_config(args.config, overrides)
    output_dir(args.output_dir, "--output-dir")
    if args.init_from:
        input_file(args.init_from, "--init-from", "checkpoint")
    from locmoe_ms.job import train  # imports MindSpore: after the cheap checks
    train(cfg, Path(args.output_dir), resume=args.resume, init_from=Path(args.init_from) if args.init_from else None)
    return 0


@exits_on_bad_input
def eval_main(argv: list[str] | None = None) -> int:
    """Validation and test perplexity of a checkpoint written by locmoe-train."""
    parser = ArgumentParser(prog="locmoe-eval", description=eval_main.__doc__)
    _common(parser)
    parser.add_argument("--checkpoint", required=True, help="a step_XXXXXXXX.ckpt file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    input_file(args.checkpoint, "--checkpoint", "checkpoint")
    from locmoe_ms.train.evaluation import evaluate_checkpoint
    result = evaluate_checkpoint(cfg, Path(args.checkpoint))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"step {result['step']}: validation perplexity {result['valid_ppl']:.3f}, "
              f"test perplexity {result['test_ppl']:.3f}")
    return 0


@exits_on_bad_input
def check_config_main(argv: list[str] | None = None) -> int:
    """locmoe-check-config: validate a config (with overrides) and print it fully resolved as YAML."""
    parser = ArgumentParser(prog="locmoe-check-config", description=check_config_main.__doc__)
    parser.add_argument("config", nargs="?", help="YAML file, for example model_configs/tiny_cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one value (parsed as YAML); repeatable")
    parser.add_argument("--explain", action="store_true", help="list every key with its allowed values, default "
                        "and meaning, and exit")
    parser.add_argument("--rank-table", metavar="FILE", help="also check that parallel_config describes this HCCL "
                        "rank table's servers and devices (what every rank checks at start-up)")
    parser.add_argument("--quiet", action="store_true", help="print nothing when the config is valid")
    parser.add_argument("--memory", action="store_true", help="print the per-device memory plan and refuse a config "
                        "that does not fit the hardware's usable HBM (always checked when train.device_target is "
                        "ascend)")
    parser.add_argument("--hardware", metavar="FILE", help="hardware file of the memory plan (default "
                        "model_configs/hardware/ascend910a.yaml)")
    parser.add_argument("--rank", type=int, help="the rank whose plan to print (every rank holds the same bytes)")
    args = parser.parse_args(argv)
    if args.explain:
        for section in SECTIONS:
            for key, text in field_help(section).items():
                print(f"{section}.{key}: {text}")
        return 0
    if args.config is None:
        parser.error("the following arguments are required: config")
    cfg = load_config(args.config, args.overrides)
    from locmoe_ms.parallel.topology import Topology  # no MindSpore: checks only

    topology = Topology.from_config(cfg)
    if args.rank_table:
        topology.check_rank_table(input_file(args.rank_table, "--rank-table", "rank table"))
    if args.rank is not None and not 0 <= args.rank < cfg.virtual_devices:
        parser.error(f"--rank {args.rank}: must be in 0..{cfg.virtual_devices - 1} (nodes * devices_per_node)")
    if not args.quiet and not args.memory:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    if args.memory or cfg.train.device_target == "ascend":
        check_memory(cfg, args.config, args.hardware, args.rank, show=args.memory)
    return 0


def check_memory(cfg, path: str, hardware: str | None, rank: int | None, show: bool) -> None:
    """The memory plan (planning/memory.py): printed with `show`; a config that does not fit is a ConfigError."""
    from locmoe_ms.config import ConfigError
    from locmoe_ms.planning.hardware import load_hardware
    from locmoe_ms.planning.memory import fits_or_error, memory_plan, render

    hw = load_hardware(hardware)
    plan = memory_plan(cfg, hw, Path(path).name)
    if show:
        print(render(plan, cfg, rank), flush=True)
    refusal = fits_or_error(plan, path, Path(hw.path).stem)
    if refusal:
        raise ConfigError(refusal)


if __name__ == "__main__":  # msrun starts a script path: `msrun ... locmoe_ms/cli.py --config ...` trains
    raise SystemExit(train_main())
