"""Console entry points: locmoe-train and locmoe-eval."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # MindSpore's INFO/WARNING lines would drown the progress output

from locmoe_ms.config import ROUTER_GATES, load_config  # noqa: E402
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
    from locmoe_ms.train.loop import train  # imports MindSpore: after the cheap checks
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
    from locmoe_ms.train.loop import evaluate_checkpoint
    result = evaluate_checkpoint(cfg, Path(args.checkpoint))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"step {result['step']}: validation perplexity {result['valid_ppl']:.3f}, "
              f"test perplexity {result['test_ppl']:.3f}")
    return 0


if __name__ == "__main__":  # msrun starts a script path: `msrun ... locmoe_ms/cli.py --config ...` trains
    raise SystemExit(train_main())
