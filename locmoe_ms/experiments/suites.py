"""The suites of tools/experiments.py: each arm is a name and the config overrides that make it.

Every arm trains the default config (model_configs/tiny_cpu.yaml) with its overrides, so arms differ in exactly
what their name says. Steps default to the config's train.max_steps (the full length) unless a suite says fewer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Validation every 50 steps: the perplexity curves of the report (evaluation changes no weight or random state).
COMMON = ("train.eval_every=50",)
# Domain-sharded data: node 0's token groups read English Wikipedia, node 1's People's Daily.
DOMAIN_SHARDED = ("data.corpus=wiki_en+peoples_daily", "data.node_domains=[0, 1]")


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Suite:
    name: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None          # None: the config's train.max_steps
    question: str = ""
    references: tuple[str, ...] = field(default=())  # SUITE/ARM the report sets beside this one's runs


def _routers() -> Suite:
    arms = [Arm("dense", ("model.sparse_layers=[]",))]
    arms += [Arm(router, (f"moe_config.router={router}",)) for router in ("locmoe", "switch", "hash", "rre")]
    return Suite("routers", tuple(arms), seeds=(0, 1),
                 question="Does LocMoE leave the single-expert phase, and how do the routers compare at full length?")


def _locality() -> Suite:
    arms = []
    for data, extra in (("iid", ()), ("domains", DOMAIN_SHARDED)):
        for mu in ("0", "0.01", "0.1", "1"):
            arms.append(Arm(f"{data}-mu{mu}", (*extra, f"moe_config.locality_loss_factor={mu}")))
    return Suite("locality", tuple(arms), steps=200,
                 question="Does the locality loss route tokens to their own node, with i.i.d. or domain-sharded data?")


def _capacity() -> Suite:
    arms = [Arm(f"{router}-cf{cf}", (f"moe_config.router={router}", f"moe_config.capacity_factor={cf}"))
            for router in ("locmoe", "switch") for cf in ("0.5", "0.75", "1.0", "1.25", "2.0")]
    return Suite("capacity", tuple(arms), steps=200,
                 question="Does a capacity lowered toward the critical bound cost perplexity?")


def _health() -> Suite:
    arms = (Arm("no-relu", ("moe_config.grap_relu=false",)),
            Arm("z-loss", ("moe_config.z_loss_factor=0.001",)),
            Arm("jitter", ("moe_config.router_jitter=0.01",)),
            Arm("bias-balance", ("moe_config.bias_balance_rate=0.001",)),
            Arm("no-relu+bias-balance", ("moe_config.grap_relu=false", "moe_config.bias_balance_rate=0.001")))
    return Suite("health", arms, references=("routers/locmoe", "routers/hash"),
                 question="Is LocMoE's expert collapse inherent to GrAP + ReLU, and does any option close the gap "
                          "to hash?")


SUITES: dict[str, Suite] = {s.name: s for s in (_routers(), _locality(), _capacity(), _health())}


def run_name(arm: Arm, seed: int) -> str:
    return f"{arm.name}-s{seed}"
