#!/usr/bin/env python3
"""Convert locmoe-train checkpoints: inspect, change format, merge, split or reshard per-rank shards, upcycle,
reroute.

Every command writes through a temporary file in the target directory and a rename, never over its input.
Bad input (missing, truncated or corrupted file, wrong flag, inconsistent shards) ends in one line on stderr and
exit code 2. `COMMAND --help` describes each command.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")  # MindSpore's INFO/WARNING lines

from locmoe_ms.ckpt.paths import (format_of, output_checkpoint, refuse_overwrite, require_exists,  # noqa: E402
                                  require_format)
from locmoe_ms.config import ROUTER_GATES  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.paths import input_file, output_dir  # noqa: E402

HELP = {
    "inspect": "Parameter names, shapes and dtypes; model parameter count (optimizer moments not counted), "
               "experts and parameters per expert; router, expert count and step from the recorded config.",
    "format": "The same tensors (bit-identical) and metadata in the other format: MindSpore .ckpt <-> "
              ".safetensors. String metadata (config_json) is stored in safetensors as a uint8 tensor "
              "__utf8__.<key>, because safetensors holds numbers only.",
    "merge": "Per-rank shards of an expert/tensor-parallel run -> one full single-process checkpoint. Give every "
             "rank: rank_r/ directories (their newest checkpoints/step_*.ckpt, or --step N) or .ckpt files. Expert "
             "blocks are joined in expert-parallel order, tensor-parallel slices along their model axis; replicas "
             "must be bit-identical. The config keeps the run's parallel_config as its virtual topology. Slices of "
             "an auto-mode job are merged by MindSpore's transform under the job's strategy (rank 0's "
             "strategy.ckpt, or --strategy).",
    "split": "A full checkpoint -> OUTPUT/rank_r/checkpoints/step_XXXXXXXX.ckpt for every rank r of --world W "
             "(default K*T, a multiple of K*T): rank r holds tensor-parallel slice r % T and expert block "
             "(r // T) % K; config_json's parallel_config becomes expert_parallel K, model_parallel T, "
             "data_parallel W/T. `locmoe-train --output-dir OUTPUT --resume` under msrun finds the shards. "
             "With --strategy FILE (an auto-mode job's strategy checkpoint: OUTPUT/rank_r/strategy.ckpt of a run, "
             "or tools/ascend_dryrun.py --output-dir's) the slices of every rank of that job instead, made by "
             "MindSpore's transform_checkpoint_by_rank, with the strategy beside each rank's checkpoints.",
    "reshard": "An auto-mode job's rank slices (every rank_r/ directory) -> the slices of another job, whose "
               "strategy checkpoint --strategy names (another device count, with or without the parallel "
               "optimizer): MindSpore's transform_checkpoint_by_rank for each new rank, reading only the old "
               "ranks it needs.",
    "upcycle": "A dense model (sparse_layers []) -> a sparse one: the FFN of each chosen layer copied into every "
               "expert, ln_ffn -> ln_moe, the gate as a fresh model of the new config starts; other parameters "
               "copied. The output holds model parameters only, at step 0. With router hash or rre (score 1) and "
               "no dropped token (capacity_factor >= experts) the upcycled model computes the dense model's "
               "output; with locmoe or switch each MoE output is the dense FFN output times the router "
               "probability of the chosen expert, so the outputs differ until training adapts.",
    "reroute": "Switch a sparse model's router: the old router's parameters and moments dropped, the new one's "
               "as a fresh model starts (moments zero); experts and everything else kept bit-exact, so "
               "training can resume with the new router.",
}


def _layers(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of block indices") from None


def _inspect(args) -> None:
    from locmoe_ms.ckpt.summary import render, summarize
    print(render(summarize(require_exists(args.ckpt)), args.json))


def _format(args) -> None:
    format_of(require_exists(args.ckpt))
    require_format(args.output, args.to)
    output_checkpoint(args.output, [args.ckpt])
    from locmoe_ms.ckpt.io import convert
    print(f"wrote {convert(Path(args.ckpt), Path(args.output), args.to)}")


def _merge(args) -> None:
    for item in args.inputs:  # rank directories or shard files
        if not Path(item).exists():
            raise UserInputError(f"{item}: not found (a rank directory or a shard checkpoint)")
    output_checkpoint(args.output, args.inputs)
    from locmoe_ms.ckpt import auto_slices, io
    from locmoe_ms.ckpt.shards import merge, shard_files
    from locmoe_ms.train import checkpoint
    files = shard_files(args.inputs, args.step)
    refuse_overwrite(args.output, files)
    if auto_slices.is_auto_slice(checkpoint.load(files[0])[1]):
        if Path(args.output).suffix != ".ckpt":
            raise UserInputError(f"--output {args.output}: merging auto-mode slices writes a .ckpt file")
        meta = auto_slices.merge(files, Path(args.output), args.step, args.strategy and Path(args.strategy))
        print(f"wrote {args.output}: {len(files)} auto-mode slices, step {meta['step']}; {_peak()}")
        return
    if args.strategy:
        raise UserInputError(f"--strategy {args.strategy}: only for auto-mode slices; {files[0]} is an "
                             f"explicit-mode shard")
    params, meta = merge(files, args.step)
    print(f"wrote {io.write(args.output, params, meta)}: {len(files)} shards, step {meta['step']}")


def _split(args) -> None:
    require_exists(args.full)
    output_dir(args.output, "--output")
    if args.strategy:
        require_exists_strategy(args.strategy)
        if args.expert_parallel is not None or args.world is not None:
            raise UserInputError("--strategy: the strategy gives the layout; drop --expert-parallel and --world")
        from locmoe_ms.ckpt import auto_slices
        targets = auto_slices.split(Path(args.full), Path(args.strategy), Path(args.output))
        print(f"wrote {len(targets)} auto-mode slices: {targets[0]} ... {targets[-1]}; {_peak()}")
        return
    if args.expert_parallel is None:
        raise UserInputError("split: pass --expert-parallel K (explicit-mode shards) or --strategy FILE (auto-mode "
                             "slices)")
    from locmoe_ms.ckpt.shards import split
    targets = split(Path(args.full), Path(args.output), args.expert_parallel, args.model_parallel, args.world,
                    args.whole_tensors)
    print(f"wrote {len(targets)} shards: {targets[0]} ... {targets[-1]}")


def _reshard(args) -> None:
    for item in args.inputs:
        if not Path(item).exists():
            raise UserInputError(f"{item}: not found (a rank directory or a slice checkpoint)")
    require_exists_strategy(args.strategy)
    output_dir(args.output, "--output")
    from locmoe_ms.ckpt import auto_slices
    from locmoe_ms.ckpt.shards import shard_files
    files = shard_files(args.inputs, args.step)
    targets = auto_slices.reshard(files, Path(args.strategy), Path(args.output), args.step,
                                  args.source_strategy and Path(args.source_strategy))
    print(f"wrote {len(targets)} auto-mode slices from {len(files)}: {targets[0]} ... {targets[-1]}; {_peak()}")


def _peak() -> str:
    """This process's peak resident memory (Linux reports kB)."""
    import resource
    return f"peak host memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"


def require_exists_strategy(path: str) -> Path:
    return input_file(path, what="strategy checkpoint")


def _upcycle(args) -> None:
    require_exists(args.dense)
    output_checkpoint(args.output, [args.dense])
    from locmoe_ms.ckpt import io
    from locmoe_ms.ckpt.upcycle import upcycle
    params, meta = upcycle(Path(args.dense), args.experts, args.router, args.sparse_layers, args.overrides)
    print(f"wrote {io.write(args.output, params, meta)}: router {args.router}, {args.experts} experts")


def _reroute(args) -> None:
    require_exists(args.ckpt)
    output_checkpoint(args.output, [args.ckpt])
    from locmoe_ms.ckpt import io
    from locmoe_ms.ckpt.reroute import reroute
    params, meta = reroute(Path(args.ckpt), args.router, args.overrides)
    print(f"wrote {io.write(args.output, params, meta)}: router {args.router}")


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="convert_ckpt.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    routers = tuple(ROUTER_GATES)
    overrides = {"dest": "overrides", "action": "append", "default": [], "metavar": "SECTION.KEY=VALUE",
                 "help": "override one value of the new config (parsed as YAML); repeatable"}

    p = sub.add_parser("inspect", help="what a checkpoint holds", description=HELP["inspect"])
    p.add_argument("ckpt", help=".ckpt or .safetensors file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("format", help=".ckpt <-> .safetensors", description=HELP["format"])
    p.add_argument("ckpt", help=".ckpt or .safetensors file")
    p.add_argument("--to", required=True, choices=("safetensors", "ckpt"))
    p.add_argument("--output", required=True, help="file ending in .safetensors or .ckpt, as --to says")
    p.set_defaults(run=_format)

    p = sub.add_parser("merge", help="per-rank shards -> one full checkpoint", description=HELP["merge"])
    p.add_argument("inputs", nargs="+", metavar="RANK_DIR_OR_CKPT", help="rank_r/ directory or shard .ckpt")
    p.add_argument("--output", required=True, help="the full checkpoint (.ckpt or .safetensors)")
    p.add_argument("--step", type=int, help="take step_N from every rank directory (default: the newest)")
    p.add_argument("--strategy", help="auto-mode slices: the job's strategy checkpoint (default: rank 0's "
                                      "strategy.ckpt)")
    p.set_defaults(run=_merge)

    p = sub.add_parser("split", help="one full checkpoint -> per-rank shards", description=HELP["split"])
    p.add_argument("full", help="full single-process checkpoint")
    p.add_argument("--expert-parallel", type=int, metavar="K", help="must divide expert_num (explicit-mode shards)")
    p.add_argument("--model-parallel", type=int, default=1, metavar="T",
                   help="tensor-parallel size; must divide num_heads, ffn_hidden_size and hidden_size (default 1)")
    p.add_argument("--world", type=int, metavar="W", help="ranks (default K*T; a multiple of K*T)")
    p.add_argument("--whole-tensors", action="store_true",
                   help="keep tensors whole along the tensor-parallel axis (as ranks of the cpu communicator hold "
                        "them); by default each rank gets its 1/T slice")
    p.add_argument("--strategy", metavar="FILE", help="an auto-mode job's strategy checkpoint: write its slices")
    p.add_argument("--output", required=True, metavar="DIR", help="run directory to create rank_r/ in")
    p.set_defaults(run=_split)

    p = sub.add_parser("reshard", help="auto-mode slices -> another job's slices", description=HELP["reshard"])
    p.add_argument("inputs", nargs="+", metavar="RANK_DIR_OR_CKPT", help="rank_r/ directory or slice .ckpt")
    p.add_argument("--strategy", required=True, metavar="FILE", help="the new job's strategy checkpoint")
    p.add_argument("--source-strategy", metavar="FILE", help="the old job's (default: rank 0's strategy.ckpt)")
    p.add_argument("--step", type=int, help="take step_N from every rank directory (default: the newest)")
    p.add_argument("--output", required=True, metavar="DIR", help="run directory to create rank_r/ in")
    p.set_defaults(run=_reshard)

    p = sub.add_parser("upcycle", help="dense model -> sparse model with copied experts", description=HELP["upcycle"])
    p.add_argument("dense", help="checkpoint of a dense model (config with sparse_layers [])")
    p.add_argument("--experts", type=int, required=True, metavar="N")
    p.add_argument("--router", required=True, choices=routers)
    p.add_argument("--sparse-layers", type=_layers, metavar="I,J",
                   help="blocks to make sparse (default: every second block starting at 1)")
    p.add_argument("--set", **overrides)
    p.add_argument("--output", required=True, help="the sparse model's checkpoint (.ckpt or .safetensors)")
    p.set_defaults(run=_upcycle)

    p = sub.add_parser("reroute", help="switch a sparse model's router", description=HELP["reroute"])
    p.add_argument("ckpt", help="full checkpoint of a sparse model")
    p.add_argument("--router", required=True, choices=routers)
    p.add_argument("--set", **overrides)
    p.add_argument("--output", required=True, help="the rerouted checkpoint (.ckpt or .safetensors)")
    p.set_defaults(run=_reroute)
    return parser


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
