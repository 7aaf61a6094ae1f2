#!/usr/bin/env python3
"""Measure delta of LocMoE's capacity bound on trained models: the cosine between each MoE input token and the GrAP
gating row of the expert it was routed to, per sparse layer, on validation batches.

    python tools/measure_delta.py RUN_DIR [RUN_DIR ...] [--batches 8] [--markdown FILE] [--plot FILE] [--json]

RUN_DIR is a locmoe-train output directory of a locmoe run (its config.json and newest checkpoint). For each layer it
prints the median and quartiles of the cosine, the share of tokens at or above the paper's delta (0.03), and the
critical capacity (tools/capacity_bound.py) at the measured median, beside the capacity the run used.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_v", "3")

from locmoe_ms.config import config_from_dict  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.capacity import group_capacity  # noqa: E402
from locmoe_ms.moe.capacity_bound import critical_capacity  # noqa: E402
from locmoe_ms.moe.gates import grap_weight  # noqa: E402
from locmoe_ms.paths import input_dir, output_file  # noqa: E402

PAPER_DELTA = 0.03


def routed_cosines(x: np.ndarray, index: np.ndarray, experts: int) -> np.ndarray:
    """cos(x_t, W[index_t]) for the GrAP weight W: the token's mean over its expert's block of features, scaled."""
    weight = grap_weight(experts, x.shape[1]).astype(np.float64)
    rows = weight[index]
    return (rows * x).sum(axis=1) / (np.linalg.norm(rows, axis=1) * np.maximum(np.linalg.norm(x, axis=1), 1e-30))


def capture(run_dir: Path, batches: int) -> tuple[dict, list[np.ndarray]]:
    """(config, per sparse layer the cosines of every validation token) of the run's newest checkpoint."""
    import mindspore as ms
    from mindspore import Tensor

    from locmoe_ms.data.dataset import eval_batches
    from locmoe_ms.model.network import build_model
    from locmoe_ms.train import checkpoint
    from locmoe_ms.data.dataset import prepare_data
    from locmoe_ms.train.device import set_context

    config_file = run_dir / "config.json"
    if not config_file.exists():
        raise UserInputError(f"{run_dir}: no config.json (not a locmoe-train output directory)")
    raw = json.loads(config_file.read_text())
    cfg = config_from_dict(raw)
    if cfg.moe_config.router != "locmoe" or not cfg.model.sparse_layers:
        raise UserInputError(f"{run_dir}: router {cfg.moe_config.router!r} with sparse layers "
                             f"{cfg.model.sparse_layers}; delta is measured on locmoe runs with an MoE layer")
    newest = checkpoint.list_checkpoints(run_dir / "checkpoints")
    if not newest:
        raise UserInputError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
    set_context(cfg)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # forward pre-hooks run in PyNative mode only
    params, meta = checkpoint.load(newest[-1])
    checkpoint.check_same_model(newest[-1], meta, cfg)
    loss_net = build_model(cfg)
    checkpoint.restore(loss_net, params, newest[-1], model_only=True)
    loss_net.set_train(False)
    cosines: list[list[np.ndarray]] = [[] for _ in cfg.model.sparse_layers]

    def hook(layer: int):
        def record(cell, inputs):
            x, token_ids, domain_ids = inputs
            index = cell.router(x, token_ids, domain_ids)[0].asnumpy()
            cosines[layer].append(routed_cosines(x.asnumpy().astype(np.float64), index, cfg.moe_config.expert_num))
        return record

    for layer, block in enumerate(cfg.model.sparse_layers):
        loss_net.network.blocks[block].moe.register_forward_pre_hook(hook(layer))
    splits = prepare_data(cfg)
    for tokens, domains in eval_batches(splits["valid"], cfg.train.batch_size, batches):
        loss_net(Tensor(tokens), Tensor(domains))
    return raw, [np.concatenate(c) for c in cosines]


def layer_summary(cos: np.ndarray, cfg, capacity: int) -> dict:
    q1, median, q3 = np.percentile(cos, [25, 50, 75])
    row = {"tokens": int(cos.size), "median": float(median), "q1": float(q1), "q3": float(q3),
           "share_at_paper_delta": float((cos >= PAPER_DELTA).mean()), "capacity_used": capacity}
    if 0 < median < 1:
        exact, _ = critical_capacity(float(median), cfg.model.hidden_size, cfg.moe_config.expert_num)
        row["ec_min_at_median"] = exact if np.isfinite(exact) else None
    return row


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="measure_delta.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="locmoe-train output directories of locmoe runs")
    parser.add_argument("--batches", type=int, default=8, help="validation batches (default 8)")
    parser.add_argument("--markdown", help="also write the table as Markdown (tools/report.py includes "
                                           "docs/results/capacity_delta.md)")
    parser.add_argument("--plot", help="also plot the cosine distributions (PNG; needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    args = parser.parse_args(argv)
    if args.batches < 1:
        raise UserInputError(f"--batches {args.batches}: must be >= 1")
    runs = [input_dir(r, "run directory") for r in args.runs]
    for path in (args.markdown, args.plot):
        if path:
            output_file(path, "--markdown" if path == args.markdown else "--plot")
    table, distributions = [], {}
    for run_dir in runs:
        raw, cosines = capture(run_dir, args.batches)
        cfg = config_from_dict(raw)
        tokens = cfg.train.batch_size * cfg.model.seq_length // cfg.parallel_config.data_parallel
        capacity = group_capacity(tokens, cfg.moe_config, cfg.parallel_config.expert_parallel)
        for layer, cos in zip(cfg.model.sparse_layers, cosines):
            row = {"run": run_dir.name, "layer": layer, **layer_summary(cos, cfg, capacity)}
            table.append(row)
            distributions[f"{run_dir.name} layer {layer}"] = cos
            if args.json:
                print(json.dumps(row))
    header = ("| run | layer | tokens | cos median (q1, q3) | share >= 0.03 | ec_min at the median | capacity used |\n"
              "|---|---|---|---|---|---|---|")
    lines = [f"| {r['run']} | {r['layer']} | {r['tokens']} | {r['median']:.3f} ({r['q1']:.3f}, {r['q3']:.3f}) | "
             f"{r['share_at_paper_delta']:.1%} | "
             f"{'-' if r.get('ec_min_at_median') is None else format(r['ec_min_at_median'], '.3g')} | "
             f"{r['capacity_used']} |" for r in table]
    text = "\n".join([header, *lines])
    if not args.json:
        print(text)
    if args.markdown:
        Path(args.markdown).write_text(
            "**Measured delta** (`python tools/measure_delta.py RUNS --markdown ...`): cosine between each MoE input "
            "token and the GrAP row of its expert, over the validation batches; ec_min is Theorem 1's critical "
            "capacity (tokens per expert, `tools/capacity_bound.py`) at the median cosine with this model's d and n "
            "(-: the theorem needs a median between 0 and 1); the capacity used is per token group and expert."
            "\n\n" + text + "\n")
    if args.plot:
        from locmoe_ms.experiments.plots import distributions as plot_distributions
        plot_distributions(distributions, Path(args.plot), PAPER_DELTA)
    return 0


if __name__ == "__main__":
    sys.exit(main())
