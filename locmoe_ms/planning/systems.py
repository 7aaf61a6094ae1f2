"""The systems the LocMoE paper compares, as configs of the step model (tools/cluster_model.py --paper).

The paper's baselines are "HashMoE and SwitchMoE implemented in PanGu-Sigma" (section 4): PanGu-Sigma's exchange
(one All-to-All of the padded buffer over the expert group, no overlap) at the configs' capacity factor. LocMoE
changes four things, each a config override here, so the step model (planning/step_model.py) prices each change
on its own and all together with the same byte and FLOP functions as every other figure:
- group-wise exchange (section 3.2): 1/mp of the slots over the expert group, an All-Gather inside the node;
- overlap: the capacity cut into `chunks`, each chunk's exchange pipelined against another's expert FFN;
- a lower capacity factor (section 3.3; Theorem 1's bound is below 2 tokens per expert at d 5120, n 16 and the
  paper's delta 0.03, so it does not say how low: the factor is an input);
- the LocMoE router (GrAP gate) with locality: the expert shares of the LocMoE trace and the local share the
  domain-sharded run of docs/results reached at the configs' locality_loss_factor 0.01 (a logit bias toward
  local experts, planning/routing.py). With a padded exchange where a token goes does not change the bytes, so
  locality acts only through count-aware bytes (AlltoAllV), shown beside.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from locmoe_ms.config import Config, load_config
from locmoe_ms.planning.flops import capacity_of
from locmoe_ms.planning.hardware import Hardware
from locmoe_ms.planning.routing import Routing, locality_bias, read_trace, trace_routing
from locmoe_ms.planning.step_model import Breakdown, step_time
from locmoe_ms.parallel.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "docs" / "results" / "traces"
LOCALITY_RUN = ROOT / "docs" / "results" / "runs" / "locality" / "domains-mu0.01-s0" / "metrics.jsonl"
BASELINES = ("hash", "switch")
PANGU_SIGMA = ("parallel_config.exchange=plain", "parallel_config.exchange_chunks=1")
CHUNKS = 4                 # LocMoE's overlap: capacity chunks (the paper gives no number)
CAPACITY_FACTOR = 1.0      # LocMoE's capacity factor against the configs' 1.25 (the paper gives no number)


@dataclass(frozen=True)
class Variant:
    """A system: the router whose trace routes it, and config overrides on top of PanGu-Sigma's exchange."""
    name: str
    router: str
    overrides: tuple[str, ...] = ()
    locality: bool = False     # routed with the domain-sharded run's locality bias


def changes(chunks: int = CHUNKS, capacity_factor: float = CAPACITY_FACTOR, local_share: float | None = None
            ) -> tuple[Variant, ...]:
    """LocMoE's four changes, one at a time (router "" = the baseline's)."""
    where = f", {local_share:.0%} local" if local_share is not None else ""
    return (Variant("group-wise exchange", "", ("parallel_config.exchange=groupwise",)),
            Variant(f"overlap, {chunks} chunks", "", (f"parallel_config.exchange_chunks={chunks}",)),
            Variant(f"capacity factor {capacity_factor:g}", "", (f"moe_config.capacity_factor={capacity_factor}",)),
            Variant(f"LocMoE router, locality{where}", "locmoe", locality=True))


def locmoe(chunks: int = CHUNKS, capacity_factor: float = CAPACITY_FACTOR) -> Variant:
    """All four changes together."""
    overrides = tuple(o for v in changes(chunks, capacity_factor) for o in v.overrides)
    return Variant("LocMoE, all four", "locmoe", overrides, locality=True)


def config_path(cluster: int) -> Path:
    return ROOT / "model_configs" / f"pangu_sigma_{cluster}n.yaml"


def variant_config(cluster: int, variant: Variant, baseline: str, count_aware: bool = False,
                   extra: tuple[str, ...] = ()) -> Config:
    aware = f"parallel_config.count_aware={str(count_aware).lower()}"
    return load_config(config_path(cluster), [f"moe_config.router={variant.router or baseline}", *PANGU_SIGMA,
                                              *variant.overrides, aware, *extra])


@lru_cache(maxsize=None)
def _trace(path: Path):
    """A trace, read once per process (every system of --paper routes from the same few)."""
    return read_trace(path)


def variant_routing(cfg: Config, variant: Variant) -> Routing:
    """The router's CPU trace scaled to cfg's cluster, with the locality run's bias for LocMoE's router."""
    bias = locality_bias(_trace(LOCALITY_RUN)) if variant.locality else None
    return trace_routing(_trace(TRACES / cfg.moe_config.router / "metrics.jsonl"), cfg, capacity_of(cfg), bias)


def price(cluster: int, variant: Variant, baseline: str, hw: Hardware, count_aware: bool = False,
          extra: tuple[str, ...] = ()) -> Breakdown:
    cfg = variant_config(cluster, variant, baseline, count_aware, extra)
    return step_time(cfg, variant_routing(cfg, variant), hw)


def local_share(cfg: Config, routing: Routing) -> float:
    """Share of the routed tokens that go to an expert on their own node, on cfg's cluster."""
    mask = Topology.from_config(cfg).group_local_mask()
    return float(sum((load * mask).sum() for load in routing.loads) / sum(load.sum() for load in routing.loads))


@dataclass
class Row:
    name: str
    padded: Breakdown
    count_aware: Breakdown


def compare(cluster: int, baseline: str, hw: Hardware, chunks: int = CHUNKS,
            capacity_factor: float = CAPACITY_FACTOR, extra: tuple[str, ...] = ()) -> list[Row]:
    """The baseline, each change on its own, all four together: padded and count-aware."""
    base = Variant(f"{baseline} (PanGu-Sigma)", baseline)
    router = changes(chunks, capacity_factor)[-1]
    cfg = variant_config(cluster, router, baseline, extra=extra)
    share = local_share(cfg, variant_routing(cfg, router))
    systems = (base, *changes(chunks, capacity_factor, share), locmoe(chunks, capacity_factor))
    return [Row(v.name, price(cluster, v, baseline, hw, False, extra), price(cluster, v, baseline, hw, True, extra))
            for v in systems]


@dataclass
class CapacityFit:
    slots: int                 # per token group and expert
    full: int                  # the configs' slots
    capacity_factor: float     # the factor that gives `slots` (priced)
    speedup: float             # baseline step / LocMoE step at it


def capacity_for_speedup(cluster: int, baseline: str, target: float, hw: Hardware, chunks: int = CHUNKS
                         ) -> CapacityFit:
    """The capacity (slots per token group and expert, a multiple of model_parallel as the group-wise exchange
    needs) at which LocMoE's four changes come closest to `target` = baseline step / LocMoE step, padded."""
    reference = variant_config(cluster, Variant("", baseline), baseline)
    full, factor = capacity_of(reference), reference.moe_config.capacity_factor
    step = reference.parallel_config.model_parallel
    base = price(cluster, Variant("", baseline), baseline, hw).step
    best = None
    for slots in range(step, full + 1, step):
        cf = (slots - 0.5) * factor / full  # ceil(tokens * cf / (ep * n)) = slots exactly
        fit = CapacityFit(slots, full, cf, base / price(cluster, locmoe(chunks, cf), baseline, hw).step)
        if best is None or abs(fit.speedup - target) < abs(best.speedup - target):
            best = fit
    return best
