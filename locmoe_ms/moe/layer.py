"""The MoE layer: router -> dispatcher -> experts -> combine (DESIGN.md section 2)."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from locmoe_ms.config import Config
from locmoe_ms.moe.capacity import expert_capacity
from locmoe_ms.moe.dispatch import Dispatcher
from locmoe_ms.moe.experts import Experts
from locmoe_ms.moe.routers import build_router
from locmoe_ms.parallel.topology import Topology


class MoELayer(nn.Cell):
    """construct(x [T, h], token_ids [T], domain_ids [T]) ->
    (y [T, h], aux_loss, locality_loss, tokens_per_expert [E], dropped_share, local_share).

    `tokens` is T, the tokens of one step (global batch); capacity is fixed from it at build time.
    """

    def __init__(self, cfg: Config, topology: Topology, tokens: int):
        super().__init__()
        moe, par = cfg.moe_config, cfg.parallel_config
        groups = topology.token_groups
        if tokens % groups:
            raise ValueError(f"{tokens} tokens do not split over {groups} token groups")
        capacity = expert_capacity(tokens // groups * par.expert_parallel, moe.capacity_factor,
                                   par.expert_parallel, moe.expert_num, moe.min_capacity)
        self.experts_num = moe.expert_num
        self.router = build_router(cfg, topology)
        self.dispatcher = Dispatcher(moe.expert_num, groups, capacity)
        self.experts = Experts(moe.expert_num, cfg.model.hidden_size, cfg.model.ffn_hidden_size,
                               cfg.model.activation, cfg.model.init_std, cfg.model.compute_dtype)
        local = topology.group_local_mask().astype(np.float32)
        self.local_mask = Tensor(local.reshape(-1))
        self.token_group_offset = Tensor(np.repeat(np.arange(groups, dtype=np.int32) * moe.expert_num,
                                                   tokens // groups))

    @property
    def capacity(self) -> int:
        return self.dispatcher.capacity

    def construct(self, x, token_ids, domain_ids):
        index, score, _, aux, loc = self.router(x, token_ids, domain_ids)
        slot, kept, load = self.dispatcher.assign(index)
        y = self.dispatcher.combine(self.experts(self.dispatcher.dispatch(x, slot)), slot, score)
        dropped_share = 1.0 - kept.mean()
        local_share = ops.gather(self.local_mask, self.token_group_offset + index, 0).mean()
        return y, aux, loc, load, dropped_share, local_share
