"""Routing for the step-time model: filled slots per (token group, expert) of every sparse layer, [L][G, E].

From a trace (metrics.jsonl of locmoe-train with config.json beside it), or synthetic.
- Same cluster as the trace (token groups, placement, tokens per group and capacity equal): the trace's own
  tokens_per_group, capped at the capacity: the fills the exchange's byte counters saw, step by step.
- Another cluster (a CPU run standing in for PanGu-Sigma): per sparse layer, the expert shares p_e and the local
  share of the steps used are carried over. The locality loss acts like a logit bias b toward a token group's
  local experts, so b = logit(local share) - logit(local fraction of experts) is read from the trace and applied
  to each target group's local fraction; inside the local and the remote experts tokens split by p_e. Target
  layer j reads trace layer floor(j * L_trace / L_target).
- Synthetic: expert shares uniform or Zipf (p_e ~ 1 / (e + 1)^s) and a local share (default: none beyond the
  local fraction, i.e. no locality bias).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locmoe_ms.config import Config, config_from_dict
from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.topology import Topology
from locmoe_ms.paths import input_file


@dataclass
class Routing:
    fills: list[np.ndarray]     # per sparse layer, [G, E] filled slots (fractional for expectations)
    loads: list[np.ndarray]     # per sparse layer, [G, E] routed tokens before the capacity cap
    label: str                  # where it came from, which steps


@dataclass
class Trace:
    path: Path
    config: Config
    records: list[dict]         # the steps used
    label: str


def read_trace(path: str | Path, steps: str | None = None) -> Trace:
    """metrics.jsonl and the config.json beside it; `steps` "A:B" (1-based, inclusive) or the second half."""
    path = input_file(path, "--trace", "metrics.jsonl")
    config_path = input_file(path.parent / "config.json", "--trace", "config.json beside the trace")
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        config = config_from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"--trace {path}: not a locmoe-train metrics.jsonl ({err})") from None
    if config.train.micro_batches > 1:  # its token counts add up a step's micro-batches: their fills are not kept
        raise UserInputError(f"--trace {path}: recorded with train.micro_batches = {config.train.micro_batches}; "
                             f"a trace needs a run with micro_batches 1 (the per-micro-batch fills)")
    records = [r for r in records if r.get("moe_layers")]
    if not records:
        raise UserInputError(f"--trace {path}: no step with MoE layers")
    last = records[-1]["step"]
    if steps:
        try:
            first, stop = (int(x) for x in steps.split(":"))
        except ValueError:
            raise UserInputError(f"--trace-steps {steps!r}: expected FIRST:LAST, e.g. 31:60") from None
    else:
        first, stop = last // 2 + 1, last
    used = [r for r in records if first <= r["step"] <= stop]
    if not used:
        raise UserInputError(f"--trace-steps {first}:{stop}: the trace holds steps {records[0]['step']}-{last}")
    return Trace(path, config, used, f"{path} steps {used[0]['step']}-{used[-1]['step']} ({len(used)} steps, "
                                     f"{config.moe_config.router})")


def same_cluster(trace: Config, target: Config) -> bool:
    """Do the trace's per-group fills apply as they are (token groups, placement, tokens and capacity)?"""
    from locmoe_ms.planning.flops import capacity_of
    keys = ("nodes", "devices_per_node", "model_parallel", "expert_parallel")
    return all(getattr(trace.parallel_config, k) == getattr(target.parallel_config, k) for k in keys) and \
        trace.micro_batch_size * trace.model.seq_length == target.micro_batch_size * target.model.seq_length and \
        trace.train.micro_batches == target.train.micro_batches and \
        capacity_of(trace) == capacity_of(target)


def step_fills(record: dict, capacity: int) -> list[np.ndarray]:
    """One trace step's [G, E] fills per layer, exactly as the exchange counted them."""
    loads = [np.asarray(layer["tokens_per_group"], np.float64) for layer in record["moe_layers"]]
    return [np.minimum(load, capacity) for load in loads]


def _check_experts(trace: Trace, cfg: Config) -> None:
    experts = len(trace.records[0]["moe_layers"][0]["tokens_per_expert"])
    if experts != cfg.moe_config.expert_num:
        raise UserInputError(f"--trace {trace.path}: routed over {experts} experts; the config has "
                             f"moe_config.expert_num = {cfg.moe_config.expert_num} (train with --set "
                             f"moe_config.expert_num={cfg.moe_config.expert_num})")


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _local_fraction(topo: Topology) -> np.ndarray:
    """[G] share of the experts resident on each token group's node."""
    return topo.group_local_mask().mean(axis=1)


def biased_loads(shares: np.ndarray, bias: float | None, local_share: float | None, topo: Topology,
                 tokens_per_group: float) -> np.ndarray:
    """[G, E] expected tokens: shares p_e, each group's local share from a logit bias or given outright."""
    mask = topo.group_local_mask()
    loads = np.zeros(mask.shape)
    for g, local in enumerate(mask):
        fraction = local.mean()
        if local_share is not None:
            lam = local_share if 0 < fraction < 1 else fraction
        elif bias is not None and 0 < fraction < 1:
            lam = 1 / (1 + math.exp(-(_logit(fraction) + bias)))
        else:
            lam = fraction
        for part, share in ((local, lam), (~local, 1 - lam)):
            if part.any():
                p = shares[part]
                loads[g, part] = tokens_per_group * share * (p / p.sum() if p.sum() > 0 else 1 / part.sum())
    return loads


def locality_bias(trace: Trace) -> float:
    """The logit bias toward local experts a run shows: logit(its local share, over its steps and layers) -
    logit(its local fraction of experts). Carries one run's locality to another run's expert shares."""
    fraction = float(_local_fraction(Topology.from_config(trace.config)).mean())
    local = float(np.mean([layer["local_share"] for r in trace.records for layer in r["moe_layers"]]))
    return _logit(local) - _logit(fraction) if 0 < fraction < 1 else 0.0


def trace_routing(trace: Trace, cfg: Config, capacity: int, bias: float | None = None) -> Routing:
    """The trace's routing on cfg's cluster; `bias` (locality_bias of another run) replaces the trace's own
    locality when the cluster differs."""
    _check_experts(trace, cfg)
    layers = len(cfg.model.sparse_layers)
    if same_cluster(trace.config, cfg):
        loads = [np.mean([np.asarray(r["moe_layers"][i]["tokens_per_group"], np.float64) for r in trace.records],
                         axis=0) for i in range(layers)]
        fills = [np.mean([step_fills(r, capacity)[i] for r in trace.records], axis=0) for i in range(layers)]
        return Routing(fills, loads, trace.label + ", per token group as recorded")
    source = Topology.from_config(trace.config)
    target = Topology.from_config(cfg)
    tokens = cfg.micro_batch_size * cfg.model.seq_length / target.token_groups
    f_source = float(_local_fraction(source).mean())
    trace_layers = len(trace.records[0]["moe_layers"])
    loads = []
    for j in range(layers):
        i = j * trace_layers // layers
        counts = np.sum([r["moe_layers"][i]["tokens_per_expert"] for r in trace.records], axis=0).astype(float)
        local = float(np.mean([r["moe_layers"][i]["local_share"] for r in trace.records]))
        own = _logit(local) - _logit(f_source) if 0 < f_source < 1 else 0.0
        loads.append(biased_loads(counts / counts.sum(), own if bias is None else bias, None, target, tokens))
    where = f"trace local fraction {f_source:.3f}" if bias is None else f"locality logit bias {bias:.3f} given"
    return Routing([np.minimum(x, capacity) for x in loads], loads,
                   trace.label + f", scaled: expert shares and a locality logit bias ({where})")


def synthetic_routing(cfg: Config, capacity: int, zipf: float, local_share: float | None) -> Routing:
    e = cfg.moe_config.expert_num
    shares = 1.0 / np.arange(1, e + 1) ** zipf
    topo = Topology.from_config(cfg)
    loads = biased_loads(shares / shares.sum(), None, local_share, topo,
                         cfg.micro_batch_size * cfg.model.seq_length / topo.token_groups)
    layers = len(cfg.model.sparse_layers)
    what = "uniform" if zipf == 0 else f"Zipf s={zipf}"
    where = "no locality bias" if local_share is None else f"local share {local_share}"
    return Routing([np.minimum(loads, capacity)] * layers, [loads] * layers, f"synthetic: {what}, {where}")
