#!/usr/bin/env python
"""Compile the project's real training step for Ascend on a machine without Ascend (dry run: nothing executes).

    python tools/ascend_dryrun.py model_configs/tiny_cpu.yaml --devices 8 --mode auto \
        --set parallel_config.model_parallel=2 --set parallel_config.data_parallel=4 \
        --set parallel_config.expert_parallel=4

Builds stand-in CANN libraries once (tools/make_cann_stub.sh, cached under ~/.cache/locmoe-ms/cann_stub/<MindSpore
version>), then re-runs itself in a child process with MS_SIMULATION_LEVEL=0 for one rank of a virtual cluster of
--devices ranks. The child builds what `locmoe-train` builds (job.build_training: auto or explicit mode,
communicator hccl) and compiles one train step in graph mode. Printed: compile time, parameter layouts (auto),
the collectives of the `step_parallel_end` IR (op, group, ranks) and the checks of locmoe_ms/autoparallel/dryrun.py.
Exit 0: compiled and checks pass; 1: compile failed or a check failed; 2: bad input. --json FILE saves the evidence.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402

BUILD_TOOLS = ("gcc", "g++", "nm", "readelf")
CHILD_FLAG = "--_child"
BAD_INPUT = "bad input: "


def parse_args(argv: list[str] | None):
    parser = ArgumentParser(prog="ascend_dryrun.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config, e.g. model_configs/pangu_sigma_64n.yaml")
    parser.add_argument("--devices", type=int, help="ranks of the virtual cluster (default: the config's "
                                                    "nodes * devices_per_node; sets nodes)")
    parser.add_argument("--rank", type=int, default=0, help="the rank to compile (default 0)")
    parser.add_argument("--mode", choices=("auto", "explicit"), help="parallel_config.mode (default: the config's); "
                        "explicit also sets parallel_config.optimizer_shard=false")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--ir-dir", help="where MindSpore saves the IR (default: a temporary directory)")
    parser.add_argument("--json", help="write compile time, layouts, collectives and check results here")
    parser.add_argument("--step", choices=("train", "forward"), default="train",
                        help="train: the train step (gradients, optimizer, loss scale); forward: the loss network")
    parser.add_argument("--stub-dir", help="stand-in CANN libraries (default: built once into the cache)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the compile (default 900)")
    parser.add_argument("--output-dir", help="the job's output directory: auto mode writes the strategy checkpoint "
                        "to OUTPUT/rank_R/strategy.ckpt, as locmoe-train does (default: a temporary directory)")
    parser.add_argument("--init-from", help="start from this full checkpoint's model weights (as locmoe-train)")
    parser.add_argument("--save-checkpoint", action="store_true", help="after the compile, save this rank's "
                        "checkpoint (auto mode: its slices) as step 0 into --output-dir, as locmoe-train saves")
    parser.add_argument("--resume", action="store_true", help="load this rank's newest checkpoint from "
                        "--output-dir into the compiled train step, as locmoe-train --resume does")
    parser.add_argument(CHILD_FLAG, dest="child", help=argparse.SUPPRESS)  # internal: the compiling child
    return parser.parse_args(argv)


def load(args):
    """The config with the tool's overrides: hccl communicator, --mode, --devices as a node count."""
    from locmoe_ms.config import load_config

    path = Path(args.config)
    if not path.is_file() and (ROOT / args.config).is_file():
        path = ROOT / args.config
    if not path.is_file():
        raise UserInputError(f"{args.config}: config not found")
    overrides = list(args.set) + ["parallel_config.communicator=hccl"]
    if args.mode:
        overrides.append(f"parallel_config.mode={args.mode}")
    if args.mode == "explicit":  # explicit mode keeps whole replicas: no parallel optimizer
        overrides.append("parallel_config.optimizer_shard=false")
    cfg = load_config(path, overrides)
    if args.devices is not None:
        per_node = cfg.parallel_config.devices_per_node
        if args.devices < 1 or args.devices % per_node:
            raise UserInputError(f"--devices {args.devices}: must be a positive multiple of "
                                 f"parallel_config.devices_per_node ({per_node})")
        cfg = load_config(path, overrides + [f"parallel_config.nodes={args.devices // per_node}"])
    from locmoe_ms.autoparallel.checks import validate
    from locmoe_ms.autoparallel.mesh import ParallelSizes

    validate(ParallelSizes.from_config(cfg), cfg.virtual_devices, cfg)
    if not 0 <= args.rank < cfg.virtual_devices:
        raise UserInputError(f"--rank {args.rank}: must be in 0..{cfg.virtual_devices - 1}")
    return cfg


def stub_dir(explicit: str | None) -> Path:
    """Stand-in CANN libraries: --stub-dir, or built once per MindSpore version into the cache."""
    if explicit:
        lib = Path(explicit) / "latest" / "lib64"
        if not lib.is_dir():
            raise UserInputError(f"--stub-dir {explicit}: no latest/lib64 inside; build it with tools/make_cann_stub.sh")
        return lib
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "locmoe-ms" / "cann_stub"
    target = cache / f"mindspore-{metadata.version('mindspore')}"
    lib = target / "latest" / "lib64"
    if (target / "done").is_file():
        return lib
    missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    if missing:
        raise UserInputError(f"building the stand-in CANN libraries needs {', '.join(BUILD_TOOLS)}; missing: "
                             f"{', '.join(missing)}")
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=cache))
    run = subprocess.run(["bash", str(ROOT / "tools" / "make_cann_stub.sh"), str(building)], capture_output=True,
                         text=True, env={**os.environ, "PYTHON": sys.executable})
    if run.returncode:
        shutil.rmtree(building, ignore_errors=True)
        raise UserInputError(f"tools/make_cann_stub.sh failed: {(run.stderr or run.stdout).strip()[-300:]}")
    (building / "done").write_text(run.stdout)
    try:
        building.rename(target)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(building, ignore_errors=True)
    return lib


# ---------------------------------------------------------------- child: the compile (Ascend plugin loaded)

def child(args) -> None:
    """Compile one rank's step; write the evidence as JSON to args.child. Always leaves with os._exit (the stub
    libraries abort in a normal interpreter teardown)."""
    result: dict = {"compiled": False}
    try:
        result.update(compile_step(args))
        result["compiled"] = True
    except UserInputError as err:
        result["error"] = f"{BAD_INPUT}{err}"
    except Exception as err:  # noqa: BLE001 - MindSpore's compile errors are the evidence
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        result["error"] = f"{type(err).__name__}: {lines[0][:600] if lines else ''}"
    Path(args.child).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


def _dry_run_init() -> None:
    """init() without the environment checks a real HCCL job needs (the dry-run cluster has no rank table)."""
    import mindspore.communication as comm
    import mindspore.communication.management as management
    from mindspore.communication.management import GlobalComm

    original = management.init

    def init(*a, **k):
        GlobalComm.CHECK_ENVS = False
        try:
            original(*a, **k)
        finally:
            GlobalComm.CHECK_ENVS = True

    comm.init = management.init = init


def compile_step(args) -> dict:
    from contextlib import nullcontext

    import numpy as np
    import mindspore as ms
    from mindspore import Tensor
    from mindspore.common.api import _cell_graph_executor
    from mindspore.nn.utils import no_init_parameters

    cfg = load(args)
    _dry_run_init()
    from locmoe_ms.job import build_training
    from locmoe_ms.train import checkpoint
    from locmoe_ms.train.loop import save_training, start_training

    ms.set_context(device_target="Ascend", mode=ms.GRAPH_MODE)
    ms.set_seed(cfg.train.seed)
    began = time.perf_counter()
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.child).parent / "output"
    # the compile needs shapes and layouts, not values: parameters stay unallocated unless a checkpoint is
    # read or written (a PanGu-Sigma config holds 37.7B parameters, 151 GB in float32)
    with nullcontext() if args.init_from or args.save_checkpoint or args.resume else no_init_parameters():
        training = build_training(cfg, Path(args.init_from) if args.init_from else None, output_dir)
    rank_dir = checkpoint.rank_dir(output_dir, training.rank)
    rows = training.rows
    batch = len(range(*rows.indices(cfg.train.batch_size)))
    inputs = [Tensor(np.zeros((batch, cfg.model.seq_length + 1), np.int32)), Tensor(np.zeros((batch,), np.int32))]
    net = training.loss_net
    shapes = {p.name: list(p.shape) for p in net.trainable_params()}
    full_shapes = {p.name: list(p.shape) for p in net.get_parameters()}  # before the compile slices them
    build_s = time.perf_counter() - began
    began = time.perf_counter()
    resumed = None
    if args.step == "train":  # as locmoe-train starts (train/loop.py start), --resume included
        net = training.step
        if args.resume:
            found = checkpoint.list_checkpoints(rank_dir / "checkpoints")
            if not found:
                raise UserInputError(f"--resume: no checkpoint in {rank_dir / 'checkpoints'}")
            resumed = str(found[-1])
        start_training(cfg, training, Path(resumed) if resumed else None)
        training.compile(cfg)  # explicit mode: its first step compiles it
    else:
        _cell_graph_executor.compile(net, *inputs, phase="eval")
    compile_s = time.perf_counter() - began
    saved = None
    if args.save_checkpoint:
        saved = str(save_training(training, rank_dir / "checkpoints", 0, {"config_json": json.dumps(cfg.to_dict())},
                                  cfg.train.keep_checkpoints))
    strategy = ""  # --step forward: the job never starts, so its strategy is the one the compile just wrote
    if training.sliced:
        strategy = str(training.strategy_file if args.step == "train" else training.compiling_strategy)
    out = {"build_s": build_s, "saved": saved, "resumed": resumed, "strategy_file": strategy, "compile_s": compile_s, "rank": args.rank,
           "devices": cfg.virtual_devices, "mode": cfg.parallel_config.mode, "step": args.step, "rows": list(rows.indices(cfg.train.batch_size)[:2]),
           "shapes": shapes, "full_shapes": full_shapes,
           "layouts": {k: [list(v[0]), [list(m) if isinstance(m, (list, tuple)) else m for m in v[1]], list(v[2])]
                       for k, v in net.parameter_layout_dict.items()},
           # the parallel optimizer's shard group of each entry it splits (layout[5]; '' elsewhere)
           "opt_shard_groups": {k: v[5] for k, v in net.parameter_layout_dict.items() if len(v) > 5 and v[5]},
           "stored_shapes": {p.name: list(p.shape) for p in net.get_parameters()}}
    if strategy and Path(strategy).is_file():
        from mindspore.parallel import build_searched_strategy

        out["strategy_ckpt"] = {k: {"dev_matrix": list(v.dev_matrix[0].dim), "tensor_map": list(v.tensor_map[0].dim),
                                    "opt_weight_shard_step": v.opt_weight_shard_step,
                                    "opt_weight_shard_size": v.opt_weight_shard_size}
                                for k, v in build_searched_strategy(strategy).items()}
    return out


# ---------------------------------------------------------------- parent: environment, report, checks

def run_child(args, cfg, lib: Path) -> tuple[dict, Path | None]:
    ir_dir = Path(args.ir_dir) if args.ir_dir else Path(tempfile.mkdtemp(prefix="locmoe_ir_"))
    ir_dir.mkdir(parents=True, exist_ok=True)
    result_file = ir_dir / "dryrun_result.json"
    env = {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"),
           "MS_SIMULATION_LEVEL": "0", "RANK_SIZE": str(cfg.virtual_devices), "RANK_ID": str(args.rank),
           "MS_DEV_SAVE_GRAPHS": "1", "MS_DEV_SAVE_GRAPHS_PATH": str(ir_dir), "GLOG_v": "3",
           # only the two stages the checks read (autoparallel/dryrun.py find_ir), not one dump per pass
           "MS_DEV_DUMP_IR_PASSES": os.environ.get("MS_DEV_DUMP_IR_PASSES", "step_parallel_end,validate"),
           "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":")}
    argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], CHILD_FLAG, str(result_file)]
    result_file.unlink(missing_ok=True)
    started = time.time()
    try:
        proc = subprocess.run(argv, env=env, cwd=ir_dir, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"compiled": False, "error": f"compile did not finish in {args.timeout:.0f} s (--timeout)"}, None
    if not result_file.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"compiled": False, "error": f"child exited {proc.returncode}: {' | '.join(tail)[:600]}"}, None
    return {**json.loads(result_file.read_text()), "started": started}, ir_dir


def checks(cfg, result: dict, ir_dir: Path) -> tuple[dict, list[str]]:
    """Collectives of the IR and the problems the checks find."""
    from locmoe_ms.autoparallel import dryrun
    from locmoe_ms.autoparallel.checks import check_strategies, tensor_sizes
    from locmoe_ms.autoparallel.mesh import ParallelSizes
    from locmoe_ms.autoparallel.table import gathered_shapes
    from locmoe_ms.parallel.topology import Topology

    sizes, topo, rank = ParallelSizes.from_config(cfg), Topology.from_config(cfg), result["rank"]
    ir = dryrun.find_ir(ir_dir, newer_than=result["started"] - 1.0)
    if ir is None:
        return {}, [f"no step_parallel_end or validate IR under {ir_dir}"]
    collectives = dryrun.parse_collectives(ir.read_text(), cfg.virtual_devices)
    groupwise = cfg.parallel_config.exchange == "groupwise"
    problems = dryrun.expert_exchange_problems(collectives, topo, rank, groupwise)
    evidence = {"ir": str(ir), "collectives": [c.to_dict() for c in collectives]}
    if result["mode"] == "auto":
        problems += dryrun.layout_problems(result["layouts"], result["shapes"], sizes, topo, rank)
        problems += dryrun.checkpoint_problems(result["layouts"], result.get("strategy_ckpt", {}),
                                               result["shapes"])
        dims = tensor_sizes(cfg, sizes)
        gathered = gathered_shapes(dims)
        unlisted = dryrun.unlisted_redistributions(collectives, topo, rank, gathered)
        evidence["unlisted"] = [c.to_dict() for c in unlisted]
        evidence["gathered"] = [[op, group, list(shape), reason, n] for op, group, shape, reason in gathered
                                if (n := sum(c.op == op and c.shape == shape and not c.gradient and
                                             c.kind == "redistribution" for c in collectives))]
        evidence["intended"] = check_strategies(sizes, dims).redistributions
        if unlisted:
            problems.append(f"{len(unlisted)} redistributions autoparallel/table.py does not list (see above)")
        problems += _optimizer_checks(cfg, result, ir_dir, collectives, evidence)
    return evidence, problems


def _optimizer_checks(cfg, result: dict, ir_dir: Path, collectives: list, evidence: dict) -> list[str]:
    """Auto mode: every parameter and moment stored as autoparallel/slices.py plans it, and (optimizer_shard) the
    parallel optimizer's AllGather and ReduceScatter exactly where it plans them."""
    from locmoe_ms.autoparallel import dryrun
    from locmoe_ms.autoparallel.mesh import ParallelSizes
    from locmoe_ms.autoparallel.slices import optimizer_group_ranks, parameter_slice

    sizes, rank = ParallelSizes.from_config(cfg), result["rank"]
    shard = cfg.parallel_config.optimizer_shard
    slices = {n: parameter_slice(n, tuple(s), sizes, shard) for n, s in result["full_shapes"].items()}
    planned = {n: s.stored for n, s in slices.items()}
    if result.get("step") == "train":  # the train step's graph holds the optimizer's moments
        planned.update({f"{m}.{n}": slices[n].stored for n in result["shapes"] for m in ("adam_m", "adam_v")})
    stored = {n: s for n, s in result["stored_shapes"].items() if dryrun.model_parameter(n) in slices}
    problems = dryrun.stored_shape_problems(stored, planned)
    if result.get("step") != "train":
        return problems
    groups = {n: optimizer_group_ranks(s, sizes, rank) for n, s in slices.items() if s.opt_group > 1}
    problems += dryrun.strategy_record_problems(result.get("strategy_ckpt", {}), groups, planned)
    backward_ir = dryrun.find_ir(ir_dir, stages=("validate",), newer_than=result["started"] - 1.0)
    backward = dryrun.parse_collectives(backward_ir.read_text(), cfg.virtual_devices) if backward_ir else []
    inserted = [c for c in collectives if c.op == "AllGather"] + [c for c in backward if c.op == "ReduceScatter"]
    counts: dict = {}
    for c in inserted:
        if c.kind == "optimizer":
            counts[(c.op, c.ranks)] = counts.get((c.op, c.ranks), 0) + 1
    evidence["optimizer_counts"] = [[op, list(ranks), n] for (op, ranks), n in sorted(counts.items())]
    return problems + dryrun.optimizer_problems(collectives, backward, groups, result["shapes"],
                                                cfg.train.micro_batches)


def report(cfg, result: dict, evidence: dict, problems: list[str]) -> None:
    from locmoe_ms.autoparallel import dryrun

    par = cfg.parallel_config
    print(f"{cfg.virtual_devices} devices (dp {par.data_parallel}, mp {par.model_parallel}, ep "
          f"{par.expert_parallel}, exchange {par.exchange}), mode {result['mode']}, rank {result['rank']}: "
          f"built in {result['build_s']:.1f} s, compiled in {result['compile_s']:.1f} s; feeds rows "
          f"{result['rows'][0]}:{result['rows'][1]} of the global batch")
    if result["layouts"]:
        print("parameter layouts (device matrix, tensor map, slice of full shape):")
        for name, (matrix, tmap, piece) in result["layouts"].items():
            if name in result["shapes"]:
                print(f"  {name}: {matrix} {tmap} {piece} of {result['shapes'][name]}")
    if "strategy_ckpt" in result:
        print(f"strategy checkpoint: {len(result['strategy_ckpt'])} entries")
    collectives = [dryrun.Collective(**{**c, "ranks": tuple(c["ranks"]), "shape": tuple(c["shape"])})
                   for c in evidence.get("collectives", [])]
    print(f"collectives in {Path(evidence.get('ir', '?')).name} (op, group, ranks, kind, count):")
    for op, group, ranks, kind, count in dryrun.summarize(collectives):
        print(f"  {op:<16} {group:<32} {'-'.join(map(str, ranks)) or 'world'} {kind} x{count}")
    if evidence.get("intended"):
        print("redistributions autoparallel/table.py intends: " +
              "; ".join(f"{a} -> {b} ({c})" for a, b, c in evidence["intended"]))
    for op, group, shape, reason, n in evidence.get("gathered", []):
        print(f"small gathers it accepts: {op} over {group} of {tuple(shape)} x{n} ({reason})")
    if evidence.get("optimizer_counts"):
        print("the parallel optimizer's collectives, each where autoparallel/slices.py plans it (op, ranks, count):")
        for op, ranks, n in evidence["optimizer_counts"]:
            print(f"  {op:<14} {'-'.join(map(str, ranks))} x{n}")
    if evidence.get("unlisted"):
        print("redistributions it does not list (op, ranks, scope, count):")
        rows: dict = {}
        for c in evidence["unlisted"]:
            key = (c["op"], "-".join(map(str, c["ranks"])), "/".join(c["scope"].split("/")[-2:]))
            rows[key] = rows.get(key, 0) + 1
        for (op, ranks, scope), n in sorted(rows.items(), key=lambda kv: -kv[1]):
            print(f"  {op:<10} {ranks:<16} {scope} x{n}")
    print("checks: " + ("pass" if not problems else f"{len(problems)} problem(s)"))
    for p in problems:
        print(f"  - {p}")


def _check_checkpoint_flags(args) -> None:
    """--save-checkpoint and --resume work in --output-dir on the train step; --init-from names a file."""
    for flag, on in (("--save-checkpoint", args.save_checkpoint), ("--resume", args.resume)):
        if on and not args.output_dir:
            raise UserInputError(f"{flag}: needs --output-dir (where the job's checkpoints are)")
        if on and args.step != "train":
            raise UserInputError(f"{flag}: checkpoints hold the train step; drop --step {args.step}")
    if args.init_from:
        from locmoe_ms.paths import input_file
        input_file(args.init_from, what="checkpoint")
    if args.output_dir:
        from locmoe_ms.paths import output_dir
        output_dir(args.output_dir, "--output-dir")


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
    cfg = load(args)
    _check_checkpoint_flags(args)
    lib = stub_dir(args.stub_dir)
    result, ir_dir = run_child(args, cfg, lib)
    if str(result.get("error", "")).startswith(BAD_INPUT):  # e.g. --resume of another job's checkpoint
        raise UserInputError(result["error"][len(BAD_INPUT):])
    if not result.get("compiled"):
        print(f"compile failed ({cfg.virtual_devices} devices, rank {args.rank}): {result.get('error')}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 1
    evidence, problems = checks(cfg, result, ir_dir)
    report(cfg, result, evidence, problems)
    if args.json:
        Path(args.json).write_text(json.dumps({**result, **evidence, "problems": problems}, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
