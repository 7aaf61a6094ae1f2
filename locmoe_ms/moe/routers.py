"""Routers: one interface for LocMoE, Switch, Hash and PanGu-Sigma's RRE.

Every router is a Cell with construct(x [T, h], token_ids [T] int32, domain_ids [T] int32) returning
    (expert_index [T] int32, score [T] f32, probs [T, n] f32, aux_loss f32, locality_loss f32)
so the MoE layer, the metrics and the benchmarks never branch on the router type. Tokens are ordered by token
group (data-parallel rank) so the locality loss can read each group's share. Fixed routers report one-hot probs,
score 1 and zero losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
import mindspore as ms

from locmoe_ms.config import ROUTER_GATES, Config
from locmoe_ms.moe.gates import DenseGate, GrAPGate
from locmoe_ms.moe.losses import auxiliary_loss, expert_load, locality_loss, z_loss
from locmoe_ms.parallel.placement import Placement


def top1(probs: Tensor, order: Tensor) -> Tensor:
    """argmax of probs; among experts tied at the maximum, the one with the largest `order` (float [T, n], the gate's
    pre-activation)."""
    tied = probs >= probs.max(axis=-1, keepdims=True)
    key = ops.where(tied, ops.stop_gradient(order), ops.full_like(order, -3.0e38))
    return ops.argmax(key, dim=-1).astype(ms.int32)


class LearnedRouter(nn.Cell):
    """Top-1 over softmax(gate(x)), with the auxiliary loss and (if locality_factor > 0) the locality loss.

    `locality_target`/`has_local` are the rows of the token groups this process routes; `global_sum` and
    `global_tokens` make the auxiliary loss that of the global batch when ranks hold parts of it. `health` holds the
    off-by-default options of moe_config (z-loss, input jitter, bias balancing), see RouterHealth.
    """

    def __init__(self, gate: nn.Cell, experts: int, aux_factor: float, locality_factor: float,
                 locality_target: np.ndarray, has_local: np.ndarray, global_sum: nn.Cell, global_tokens: int,
                 health: "RouterHealth | None" = None):
        super().__init__()
        self.global_sum = global_sum
        self.global_tokens = global_tokens
        self.gate = gate
        self.experts = experts
        self.aux_factor = aux_factor
        self.locality_factor = locality_factor
        self.use_locality = locality_factor > 0
        self.target = Tensor(locality_target, ms.float32)
        self.has_local = Tensor(has_local, ms.float32)
        health = health or RouterHealth()
        self.z_loss_factor = health.z_loss_factor
        self.jitter = health.jitter
        if self.jitter > 0:
            self.uniform = ops.UniformReal()
        self.softmax = ops.Softmax(axis=-1)  # owned: auto-parallel pins it (autoparallel/apply.py PRIMITIVE_OPS)
        self.balance_rate = health.bias_balance_rate
        if self.balance_rate > 0:  # a parameter so checkpoints keep it, updated by the rule below, not by gradient
            self.balance_bias = Parameter(Tensor(np.zeros(experts, np.float32)), name="balance_bias",
                                          requires_grad=False)

    def construct(self, x, token_ids, domain_ids):
        if self.jitter > 0 and self.training:
            x = x * (1.0 - self.jitter + 2.0 * self.jitter * self.uniform(x.shape))
        logits, order = self.gate(x)
        probs = self.softmax(logits)
        if self.balance_rate > 0:
            index = top1(probs + self.balance_bias, order)
        else:
            index = top1(probs, order)
        score = ops.gather_elements(probs, 1, index.reshape(-1, 1)).reshape(-1)
        load = expert_load(index, self.experts, self.global_sum)
        aux = auxiliary_loss(probs, load, self.aux_factor, self.global_sum, self.global_tokens)
        if self.z_loss_factor > 0:
            aux = aux + z_loss(logits, self.z_loss_factor, self.global_sum, self.global_tokens)
        loc = locality_loss(probs, self.target, self.has_local, self.locality_factor) if self.use_locality \
            else ops.zeros((), ms.float32)
        if self.balance_rate > 0 and self.training:
            index = ops.depend(index, self.balance(load))
        return index, score, probs, aux, loc

    def balance(self, load):
        """bias += rate * sign(mean load - load), from the global batch's load: under-loaded experts gain."""
        step = self.balance_rate * ops.sign(load.mean() - load)
        return ops.assign_add(self.balance_bias, ops.stop_gradient(step))


@dataclass(frozen=True)
class RouterHealth:
    """The off-by-default router options of moe_config that the health experiments test (docs/results)."""
    z_loss_factor: float = 0.0
    jitter: float = 0.0
    bias_balance_rate: float = 0.0

    @classmethod
    def from_config(cls, moe) -> "RouterHealth":
        return cls(moe.z_loss_factor, moe.router_jitter, moe.bias_balance_rate)


class FixedRouter(nn.Cell):
    """Base of parameter-free routers: subclasses map (token_ids, domain_ids) to experts."""

    def __init__(self, experts: int):
        super().__init__()
        self.experts = experts

    def assign(self, token_ids: Tensor, domain_ids: Tensor) -> Tensor:
        raise NotImplementedError

    def construct(self, x, token_ids, domain_ids):
        index = self.assign(token_ids, domain_ids)
        probs = ops.one_hot(index, self.experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        score = ops.ones(index.shape, ms.float32)
        zero = ops.zeros((), ms.float32)
        return index, score, probs, zero, zero


def balanced_table(size: int, buckets: int, seed: int) -> np.ndarray:
    """A fixed random map of 0..size-1 onto buckets, each bucket receiving floor or ceil(size/buckets) ids."""
    return (np.random.default_rng(seed).permutation(size) % buckets).astype(np.int32)


class HashRouter(FixedRouter):
    """Hash layer (Roller et al. 2021): a fixed balanced hash of the token id."""

    def __init__(self, vocab_size: int, experts: int, seed: int):
        super().__init__(experts)
        self.vocab_size = vocab_size
        self.table = Tensor(balanced_table(vocab_size, experts, seed))

    def assign(self, token_ids, domain_ids):
        return ops.gather(self.table, token_ids % self.vocab_size, 0)


def group_tables(group_of_id: np.ndarray | None, vocab_size: int, groups: int, per_group: int,
                 seed: int) -> np.ndarray:
    """[groups, vocab] level-2 tables of RRE: row g maps the ids that reach group g onto its `per_group` experts,
    balanced over exactly those ids (all ids when level 1 is the domain, `group_of_id == g` when it is a token
    hash); entries of ids that never reach g are 0 and unused."""
    tables = np.zeros((groups, vocab_size), np.int32)
    for g in range(groups):
        ids = np.arange(vocab_size) if group_of_id is None else np.flatnonzero(group_of_id == g)
        tables[g, ids] = balanced_table(len(ids), per_group, seed + 1 + g)
    return tables


class RRERouter(FixedRouter):
    """PanGu-Sigma's random routed experts: level 1 picks an expert group (domain id, or a token hash),
    level 2 a fixed hash of the token id inside the group, balanced over the ids that reach that group."""

    def __init__(self, vocab_size: int, experts: int, groups: int, group_by_domain: bool, seed: int):
        super().__init__(experts)
        self.vocab_size = vocab_size
        self.groups = groups
        self.per_group = experts // groups
        self.group_by_domain = group_by_domain
        group_of_id = balanced_table(vocab_size, groups, seed)
        self.group_table = Tensor(group_of_id)
        inner = group_tables(None if group_by_domain else group_of_id, vocab_size, groups, self.per_group, seed)
        self.inner_table = Tensor(inner.reshape(-1))

    def assign(self, token_ids, domain_ids):
        ids = token_ids % self.vocab_size
        if self.group_by_domain:
            group = domain_ids % self.groups
        else:
            group = ops.gather(self.group_table, ids, 0)
        return group * self.per_group + ops.gather(self.inner_table, group * self.vocab_size + ids, 0)


def _learned(cfg: Config, placement: Placement, tokens: int, gate: nn.Cell, locality_factor: float) -> LearnedRouter:
    target, has_local = placement.topology.locality_target(cfg.moe_config.locality_eps)
    rows = list(placement.token_groups)
    return LearnedRouter(gate, cfg.moe_config.expert_num, cfg.moe_config.aux_loss_factor, locality_factor,
                         target[rows], has_local[rows], placement.data_sum(),
                         placement.global_tokens(tokens) if placement.distributed else None,
                         RouterHealth.from_config(cfg.moe_config))


# name -> builder(cfg, placement, tokens routed by this process)
ROUTERS: dict[str, Callable[[Config, Placement, int], nn.Cell]] = {
    "locmoe": lambda cfg, pl, tokens: _learned(cfg, pl, tokens, GrAPGate(cfg.model.hidden_size,
                                                                         cfg.moe_config.expert_num,
                                                                         cfg.moe_config.grap_relu),
                                               cfg.moe_config.locality_loss_factor),
    "switch": lambda cfg, pl, tokens: _learned(cfg, pl, tokens, DenseGate(cfg.model.hidden_size,
                                                                          cfg.moe_config.expert_num,
                                                                          cfg.model.init_std), 0.0),
    "hash": lambda cfg, pl, tokens: HashRouter(cfg.model.vocab_size, cfg.moe_config.expert_num,
                                               cfg.moe_config.hash_seed),
    "rre": lambda cfg, pl, tokens: RRERouter(cfg.model.vocab_size, cfg.moe_config.expert_num,
                                             cfg.moe_config.rre_groups, cfg.moe_config.rre_group_by == "domain",
                                             cfg.moe_config.hash_seed),
}
assert set(ROUTERS) == set(ROUTER_GATES), "router registry and config.ROUTER_GATES must name the same routers"


def build_router(cfg: Config, placement: Placement, tokens: int) -> nn.Cell:
    """The router named by cfg.moe_config.router, for the `tokens` this process routes per step."""
    return ROUTERS[cfg.moe_config.router](cfg, placement, tokens)
