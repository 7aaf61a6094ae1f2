#!/usr/bin/env python3
"""Training throughput of a config in GRAPH mode and its model-FLOPs utilisation (MFU) against the practical peak
of this CPU, a NumPy fp32 matmul measured in the same run (before and after the training steps).

Model FLOPs count useful work only: 6 x (matmul parameters a token passes through: attention, dense FFN, one expert,
the tied LM head) + 12 x layers x seq_length x hidden for attention scores; no capacity padding, no recomputation.
With --profile, MindSpore's profiler runs a few more steps and the top operators by time are printed.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from locmoe_ms.config import Config, load_config  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.paths import output_file  # noqa: E402


def model_flops_per_token(cfg: Config) -> float:
    m = cfg.model
    h, f = m.hidden_size, m.ffn_hidden_size
    blocks = m.num_layers + 1  # + the top query layer
    attention = 4 * h * h
    ffn = 2 * h * f  # dense FFN, or the one expert a token is routed to
    params = blocks * (attention + ffn) + h * m.vocab_size
    return 6.0 * params + 12.0 * blocks * m.seq_length * h


def numpy_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def profile_steps(step_cell, batches, out_dir: Path) -> list[tuple[str, float, float]]:
    """(op type, ms per step, share) for the top operators over the given batches."""
    import csv
    import mindspore as ms

    prof = ms.Profiler(output_path=str(out_dir))
    for inputs in batches:
        step_cell(*inputs)[0].asnumpy()
    prof.stop()
    prof.analyse()
    table = next(out_dir.rglob("cpu_op_type_info_0.csv"), None)
    if table is None:
        return []
    rows = list(csv.DictReader(table.open()))
    total = sum(float(r["total_compute_time"]) for r in rows) or 1.0
    rows.sort(key=lambda r: -float(r["total_compute_time"]))
    return [(r["op_type"], float(r["total_compute_time"]) / len(batches), float(r["total_compute_time"]) / total)
            for r in rows[:12]]


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="bench_train.py", description=__doc__)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "model_configs" / "tiny_cpu.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also print a per-operator profile")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise UserInputError(f"--steps = {args.steps}, --warmup = {args.warmup}: need steps >= 1 and warmup >= 0")
    cfg = load_config(args.config, args.overrides + ["train.mode=graph"])
    if args.json:
        output_file(args.json, "--json")

    from locmoe_ms.data.dataset import BatchStream
    from locmoe_ms.data.dataset import prepare_data
    from locmoe_ms.job import build_training
    from locmoe_ms.train.device import set_context

    peak_before = numpy_peak_gflops()
    set_context(cfg)
    splits = prepare_data(cfg)
    training = build_training(cfg)
    step_cell = training.step
    stream = BatchStream(splits["train"], cfg.train.batch_size, cfg.train.seed)
    compile_s = _timed(lambda: step_cell(*training.inputs(*stream.next(), 1))[0].asnumpy())
    for _ in range(args.warmup):
        step_cell(*training.inputs(*stream.next(), 1))[0].asnumpy()
    times = []
    for _ in range(args.steps):
        inputs = training.inputs(*stream.next(), 1)
        times.append(_timed(lambda: step_cell(*inputs)[0].asnumpy()))
    peak_after = numpy_peak_gflops()

    tokens = cfg.train.batch_size * cfg.model.seq_length
    step_s = float(np.median(times))
    flops = model_flops_per_token(cfg) * tokens / step_s / 1e9
    peak = max(peak_before, peak_after)
    result = {"config": args.config, "tokens_per_step": tokens, "step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s,
              "model_gflops_per_s": flops, "numpy_peak_gflops": [peak_before, peak_after], "mfu": flops / peak,
              "compile_s": compile_s, "model_flops_per_token": model_flops_per_token(cfg)}
    print(f"config {args.config} | router {cfg.moe_config.router} | {tokens} tokens/step | GRAPH mode, fp32")
    print(f"compile + first step {compile_s:.1f} s; median step {step_s * 1e3:.1f} ms over {args.steps} steps")
    print(f"throughput {tokens / step_s:,.0f} tokens/s = {flops:.1f} GFLOP/s of model FLOPs "
          f"({model_flops_per_token(cfg) / 1e6:.1f} MFLOP/token)")
    print(f"NumPy fp32 matmul peak (2048^3) {peak_before:.1f} GFLOP/s before, {peak_after:.1f} after; "
          f"MFU {flops / peak:.1%} of the better")
    if args.profile:
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"locmoe_profile_{os.getpid()}"
        top = profile_steps(step_cell, [training.inputs(*stream.next(), 1) for _ in range(3)], out)
        result["profile"] = top
        print("top operators (ms per step, share of operator time):")
        for op, ms_step, share in top:
            print(f"  {op:<24} {ms_step:9.1f}  {share:6.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
