#!/usr/bin/env python3
"""Step time of a config on an Ascend cluster: compute, expert exchange, other collectives, what overlaps.

Compute comes from the FLOPs of every op (locmoe_ms/planning/flops.py); the expert exchange's bytes from the
functions the exchange's own byte counters call, per rank, split same device / intra-node / inter-node; times
from the hardware file's bandwidths and latencies (model_configs/hardware/ascend910a.yaml, every value with its
source). Routing comes from a locmoe-train trace (metrics.jsonl; config.json beside it) or is synthetic.

  cluster_model.py --config model_configs/pangu_sigma_128n.yaml --trace docs/results/traces/locmoe/metrics.jsonl
  cluster_model.py --config model_configs/pangu_sigma_128n.yaml --zipf 1.0 --set parallel_config.count_aware=true
  cluster_model.py --paper [--plot steps.png]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from locmoe_ms.planning import paper, systems  # noqa: E402
from locmoe_ms.planning.flops import capacity_of  # noqa: E402
from locmoe_ms.planning.hardware import load_hardware  # noqa: E402
from locmoe_ms.planning.routing import read_trace, synthetic_routing, trace_routing  # noqa: E402
from locmoe_ms.planning.step_model import step_time  # noqa: E402
from locmoe_ms.config import load_config  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.paths import input_file, output_file  # noqa: E402

TRACES = systems.TRACES
ASSUMPTIONS = """assumptions (README.md, "How fast on a cluster"):
  - compute: matmul FLOPs only, at peak x efficiency of the hardware file; experts over every capacity slot
  - All-to-All pairwise (kinds add up), the slowest rank sets each layer; the backward and a recompute repeat it
  - tensor-parallel and gradient All-Reduce as rings; gradients float32; gradient_overlap of the hardware file
  - a trace from another cluster carries its expert shares and a locality logit bias over (planning/routing.py)
"""


def build_routing(cfg, args, router_trace: Path | None = None):
    trace_path = router_trace or args.trace
    if trace_path:
        return trace_routing(read_trace(trace_path, args.trace_steps), cfg, capacity_of(cfg))
    return synthetic_routing(cfg, capacity_of(cfg), args.zipf, args.local_share)


def describe(cfg, path) -> str:
    par = cfg.parallel_config
    return (f"{path} (router {cfg.moe_config.router}, {par.nodes * par.devices_per_node} devices: {par.nodes} "
            f"nodes x {par.devices_per_node}, tp {par.model_parallel}, ep {par.expert_parallel}, {par.exchange} "
            f"exchange, {'count-aware' if par.count_aware else 'padded'}, chunks {par.exchange_chunks}, capacity "
            f"{capacity_of(cfg)} slots per token group and expert)")


def print_breakdown(cfg, path, routing, hw, result) -> None:
    ms = 1e3
    print(f"config   {describe(cfg, path)}")
    print(f"routing  {routing.label}")
    print(f"hardware {hw.path}")
    fill = sum(f.sum() for f in routing.fills) / sum(f.size for f in routing.fills) / capacity_of(cfg)
    dropped = 1 - sum(f.sum() for f in routing.fills) / sum(x.sum() for x in routing.loads)
    print(f"slots filled {fill:.1%}, tokens dropped {dropped:.1%}")
    rows = [("compute", result.compute, f"{result.flops_per_device / 1e12:.1f} TFLOP per device; expert FFN "
                                        f"{result.expert_compute * ms:.1f} ms of it"),
            ("expert exchange", result.all_to_all + result.all_gather,
             f"All-to-All {result.all_to_all * ms:.1f}, All-Gather {result.all_gather * ms:.1f}"),
            ("  exposed after overlap", result.exchange_exposed, ""),
            ("tensor-parallel All-Reduce", result.tensor_parallel, "dense layers"),
            ("gradient All-Reduce", result.gradient_all_reduce, "data parallel, exposed part"),
            ("step", result.step, f"All-to-All {result.all_to_all_share:.1%} of the step")]
    for name, value, note in rows:
        print(f"  {name:<28}{value * ms:10.1f} ms  {note}")
    print("slowest rank, one layer forward (dispatch + combine), MB sent:")
    for op, by_kind in result.bytes_per_layer.items():
        print(f"  {op:<11}" + "  ".join(f"{k} {v / 1e6:8.2f}" for k, v in by_kind.items()))


def run_paper(args, hw) -> dict:
    """Per cluster and baseline: the rows of systems.compare; the capacities that reach the paper's 64N speed-ups;
    at 256N, LocMoE against Hash at the capacity of the 64N Hash speed-up."""
    extra, chunks, factor = tuple(args.set), args.locmoe_chunks, args.locmoe_capacity_factor
    rows = {(c, b): systems.compare(c, b, hw, chunks, factor, extra) for c in paper.CLUSTERS
            for b in systems.BASELINES}
    capacity = {}
    for (cluster, baseline), cut in paper.REDUCTION.items():
        fit = systems.capacity_for_speedup(cluster, baseline, 1 / (1 - cut), hw, chunks)
        cfg = systems.variant_config(cluster, systems.locmoe(chunks, fit.capacity_factor), baseline, extra=extra)
        routing = systems.variant_routing(cfg, systems.locmoe(chunks, fit.capacity_factor))
        dropped = 1 - sum(f.sum() for f in routing.fills) / sum(x.sum() for x in routing.loads)
        capacity[(cluster, baseline)] = {**fit.__dict__, "paper_speedup": 1 / (1 - cut), "dropped": float(dropped)}
    factor = capacity[(64, "hash")]["capacity_factor"]
    base = systems.price(256, systems.Variant("", "hash"), "hash", hw, extra=extra)
    at_256 = systems.price(256, systems.locmoe(chunks, factor), "hash", hw, extra=extra)
    return {"rows": rows, "capacity": capacity, "hash_256": {"capacity_factor": factor,
                                                             "cut": 1 - at_256.step / base.step},
            "chunks": chunks, "capacity_factor": args.locmoe_capacity_factor}


def _percent(x: float) -> str:
    return f"{0.0 if abs(x) < 5e-4 else x:.1%}"  # no "-0.0%" for a rounding residue


def _cut(row, base, attr: str) -> str:
    return _percent(1 - getattr(row, attr).step / getattr(base, attr).step)


def print_paper(results, hw) -> None:
    print("LocMoE paper (arXiv 2401.13920) section 4: LocMoE against \"HashMoE and SwitchMoE implemented in "
          "PanGu-Sigma\"")
    hardware = Path(hw.path).resolve()
    hardware = hardware.relative_to(ROOT) if hardware.is_relative_to(ROOT) else hardware
    print(f"step model (planning/step_model.py, {hardware}); PanGu-Sigma = plain exchange, no overlap, the configs' "
          f"capacity factor; routing = {TRACES.relative_to(ROOT)}/<router> scaled to each cluster, LocMoE's locality "
          f"from {systems.LOCALITY_RUN.relative_to(ROOT)}; batch = Table 1's 32 sequences per data-parallel group")
    print(f"{'':<8}{'':<38}{'padded exchange (as PanGu-Sigma runs it)':^58}{'count-aware':>13}")
    print(f"{'cluster':<8}{'system':<38}{'step ms':>9}{'compute':>9}{'comm':>7}{'overlap':>9}{'idle':>6}"
          f"{'cut':>8}{'paper':>9}{'cut':>13}")
    for (cluster, baseline), rows in results["rows"].items():
        base = rows[0]
        for i, row in enumerate(rows):
            parts = {k: v / row.padded.step for k, v in row.padded.categories().items()}
            name = row.name if i in (0, len(rows) - 1) else f"+ {row.name}"
            cut = _cut(row, base, "padded") if i else ""
            claim = paper.paper_reduction(cluster, baseline) if i == len(rows) - 1 else ""
            aware = _cut(row, base, "count_aware") if i else f"{row.count_aware.step * 1e3:.1f} ms"
            print(f"{f'{cluster}N' if i == 0 else '':<8}{name:<38}{row.padded.step * 1e3:9.1f}"
                  f"{_percent(parts['computation']):>9}{_percent(parts['communication']):>7}"
                  f"{_percent(parts['overlap']):>9}{_percent(parts['idle']):>6}{cut:>8}{claim:>9}{aware:>13}")
    print("compute, comm, overlap, idle: the paper's categories (Figure 10) as shares of the step; cut: 1 - step / "
          "the baseline's step; paper: Figure 7's 64N speed-ups as a cut, '<= 0' section 4.2's 256N remark")
    print("capacity for the paper's 64N speed-ups (all four changes, padded; slots per token group and expert, a "
          "multiple of model_parallel):")
    for (cluster, baseline), c in results["capacity"].items():
        print(f"  {cluster}N vs {baseline}: paper {c['paper_speedup']:.2f}x -> {c['slots']} slots, "
              f"{c['slots'] / c['full']:.0%} of the configs' {c['full']} (capacity factor "
              f"{c['capacity_factor']:.3f}): model {c['speedup']:.3f}x, tokens dropped {c['dropped']:.1%}")
    h = results["hash_256"]
    verdict = "reproduces" if h["cut"] <= 0 else "does not reproduce"
    print(f"  256N vs hash at capacity factor {h['capacity_factor']:.3f}: cut {h['cut']:.1%}: the model {verdict} "
          f"'at 256N LocMoE does not surpass HashMoE' (it has no straggler or missing-local-expert effect)")
    print(f"assumptions: LocMoE's overlap in {results['chunks']} chunks and its capacity factor "
          f"{results['capacity_factor']:g} (of the configs' 1.25) are this tool's (--locmoe-chunks, "
          f"--locmoe-capacity-factor; the paper states neither); locality is the domain-sharded run's logit bias "
          f"toward local experts, applied to each cluster's local fraction (2 of 16 experts per node at 64N, 1 at "
          f"128N and 256N); padded = static shapes (MindSpore's AlltoAll), count-aware = AlltoAllV of the filled "
          f"slots; no stragglers: every rank computes every capacity slot, so Hash and Switch differ only in "
          f"count-aware bytes and the gate; times from the hardware file's bandwidths, latencies and matmul "
          f"efficiency")
    for cluster, share in paper.ALL_TO_ALL_SHARE.items():
        r = results["rows"][(cluster, "hash")][0].padded
        slower = share * (r.step - r.all_to_all) / ((1 - share) * r.all_to_all)
        print(f"  {cluster}N All-to-All share: model {r.all_to_all_share:.1%} (Hash, plain exchange), paper "
              f"{share:.1%}: needs the All-to-All {slower:.0f}x slower than modelled (inter-node algorithm bandwidth "
              f"~{hw.bandwidth[2] / 1e9 / slower:.1f} GB/s, not {hw.bandwidth[2] / 1e9:g}) with everything else as "
              f"modelled")


def paper_json(results) -> dict:
    rows = {f"{c}N/{b}": [{"system": r.name, "padded": {**r.padded.as_dict(), **r.padded.categories()},
                           "count_aware": {**r.count_aware.as_dict(), **r.count_aware.categories()}} for r in rows]
            for (c, b), rows in results["rows"].items()}
    return {"rows": rows, "capacity": {f"{c}N/{b}": v for (c, b), v in results["capacity"].items()},
            "hash_256": results["hash_256"]}


def plot(results, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: --plot {path}: matplotlib is not installed (pip install -e .[plot]); no plot written")
        return
    bars = [(f"{c}N\n{b}", results["rows"][(c, b)][0].padded) for c in paper.CLUSTERS for b in systems.BASELINES]
    bars += [(f"{c}N\nLocMoE", results["rows"][(c, "hash")][-1].padded) for c in paper.CLUSTERS]
    bars.sort(key=lambda bar: int(bar[0].split("N")[0]))
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = [0.0] * len(bars)
    for part in ("computation", "overlap", "communication", "idle"):
        values = [max(b.categories()[part], 0.0) * 1e3 for _, b in bars]
        ax.bar(range(len(bars)), values, bottom=bottom, label=part)
        bottom = [x + v for x, v in zip(bottom, values)]
    ax.set_xticks(range(len(bars)), [label for label, _ in bars])
    ax.set_ylabel("ms per step (padded exchange)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="cluster_model.py", description=__doc__, epilog=ASSUMPTIONS,
                            formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a YAML config (model_configs/pangu_sigma_128n.yaml)")
    parser.add_argument("--router", choices=paper.ROUTERS + ("rre",), help="override moe_config.router")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--trace", help="metrics.jsonl of a locmoe-train run (config.json beside it)")
    parser.add_argument("--trace-steps", metavar="FIRST:LAST", help="steps of the trace (default: second half)")
    parser.add_argument("--zipf", type=float, default=0.0, help="synthetic routing: Zipf skew s (0 = uniform)")
    parser.add_argument("--local-share", type=float, help="synthetic routing: tokens routed to their node's experts")
    parser.add_argument("--hardware", help="hardware file (default model_configs/hardware/ascend910a.yaml)")
    parser.add_argument("--paper", action="store_true",
                        help="64N/128N/256N: PanGu-Sigma's Hash and Switch against LocMoE's changes, as the paper")
    parser.add_argument("--locmoe-chunks", type=int, default=systems.CHUNKS, help="--paper: LocMoE's overlap chunks")
    parser.add_argument("--locmoe-capacity-factor", type=float, default=systems.CAPACITY_FACTOR,
                        help="--paper: LocMoE's capacity factor (the configs have 1.25)")
    parser.add_argument("--plot", help="--paper: write stacked bars to this image (needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.locmoe_chunks < 1:
        raise UserInputError(f"--locmoe-chunks = {args.locmoe_chunks}: must be >= 1")
    if not args.locmoe_capacity_factor > 0:
        raise UserInputError(f"--locmoe-capacity-factor = {args.locmoe_capacity_factor}: must be > 0")
    if args.zipf < 0 or args.zipf != args.zipf:
        raise UserInputError(f"--zipf = {args.zipf}: must be >= 0")
    if args.local_share is not None and not 0 <= args.local_share <= 1:
        raise UserInputError(f"--local-share = {args.local_share}: must be in [0, 1]")
    if args.trace and (args.zipf or args.local_share is not None):
        raise UserInputError("--trace with --zipf/--local-share: routing comes from one or the other")
    hw = load_hardware(args.hardware)
    if args.paper:
        plot_path = output_file(args.plot, "--plot") if args.plot else None
        results = run_paper(args, hw)
        if args.json:
            print(json.dumps(paper_json(results)))
            return 0
        print_paper(results, hw)
        if plot_path:
            plot(results, plot_path)
        return 0
    if not args.config:
        raise UserInputError("--config: required (or --paper)")
    config = input_file(args.config, "--config", "config file")
    cfg = load_config(config, ([f"moe_config.router={args.router}"] if args.router else []) + args.set)
    routing = build_routing(cfg, args)
    result = step_time(cfg, routing, hw)
    if args.json:
        print(json.dumps({"config": str(config), "routing": routing.label, "hardware": hw.path,
                          **result.as_dict()}))
        return 0
    print_breakdown(cfg, config, routing, hw, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
