"""The MoE layer: router -> dispatcher -> exchange -> experts -> combine (the token flow in README.md)."""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn, ops

from locmoe_ms.config import Config
from locmoe_ms.capacity import group_capacity
from locmoe_ms.layers import DTYPES
from locmoe_ms.moe.dispatch import Dispatcher
from locmoe_ms.moe.experts import Experts
from locmoe_ms.moe.routers import build_router
from locmoe_ms.parallel.exchange import build_exchange
from locmoe_ms.parallel.placement import Placement


class GroupwiseLayouts(nn.Cell):
    """Auto-parallel only: identity slices whose shard strategies (autoparallel/table.py, exchange.*) pin the
    group-wise exchange's intermediate layouts, so MindSpore sends 1/mp of the slots over the expert-parallel group
    and gathers them inside the tensor-parallel group rather than sending the full payload. They see the buffer
    token-group-major, [G, E, C, h], so numeric strategies order the devices (edp, ep, mp) as Topology does.
    Values pass unchanged."""

    def __init__(self, experts: int, groups: int, capacity: int, hidden: int):
        super().__init__()
        self.shape = (groups, experts, capacity, hidden)
        self.send_slice, self.send_all_to_all, self.send_all_gather = (ops.StridedSlice() for _ in range(3))
        self.return_slice, self.return_all_to_all, self.return_all_gather = (ops.StridedSlice() for _ in range(3))
        # the transposes between the expert-major and the token-group-major view, owned so that they are pinned
        # too: the one leaving the experts sees E:ep before G:edp, an order only a Layout keeps (autoparallel/apply.py)
        self.to_groups, self.to_experts, self.from_experts, self.back = (ops.Transpose() for _ in range(4))

    def _through(self, x, enter, first, second, third, leave):
        groups, experts, capacity, hidden = self.shape
        y = enter(x.reshape(experts, groups, capacity, hidden), (1, 0, 2, 3))
        begin, strides = (0, 0, 0, 0), (1, 1, 1, 1)
        y = third(second(first(y, begin, self.shape, strides), begin, self.shape, strides), begin, self.shape, strides)
        return leave(y, (1, 0, 2, 3)).reshape(x.shape)

    def dispatched(self, buffer):
        """[E, G*C, h] on its way to the experts."""
        return self._through(buffer, self.to_groups, self.send_slice, self.send_all_to_all, self.send_all_gather,
                             self.to_experts)

    def returned(self, expert_out):
        """[E, G*C, h] on its way back to the token groups."""
        return self._through(expert_out, self.from_experts, self.return_slice, self.return_all_to_all,
                             self.return_all_gather, self.back)


class MoELayer(nn.Cell):
    """construct(x [T, h], token_ids [T], domain_ids [T]) ->
    (y [T, h], aux_loss, locality_loss, tokens_per_group [G, E], dropped_share, local_share, bytes_sent [3]).

    `tokens` is T, the tokens this process routes per step (the global batch in one process, a rank's share
    under msrun); capacity is fixed from it at build time. The statistics are those of the global batch; the
    locality loss is the mean over this process's token groups (the loss network averages it over ranks).
    tokens_per_group holds every token group of the cluster (G = data_parallel), so a trace of one rank tells the
    cluster model (tools/cluster_model.py) every rank's filled slots.
    """

    def __init__(self, cfg: Config, placement: Placement, tokens: int):
        super().__init__()
        moe, par = cfg.moe_config, cfg.parallel_config
        groups = placement.token_groups
        if tokens % len(groups):
            raise ValueError(f"{tokens} tokens do not split over {len(groups)} token groups")
        per_group = tokens // len(groups)
        capacity = group_capacity(per_group, moe, par.expert_parallel)
        self.router = build_router(cfg, placement, tokens)
        self.dispatcher = Dispatcher(moe.expert_num, len(groups), capacity, per_group=par.mode == "auto",
                                     dtype=DTYPES[cfg.model.compute_dtype])  # the expert path's dtype
        self.experts = Experts(len(placement.experts), cfg.model.hidden_size, cfg.model.ffn_hidden_size,
                               cfg.model.activation, cfg.model.init_std, cfg.model.compute_dtype)
        self.exchange = build_exchange(placement, self.experts, moe.expert_num, capacity, cfg.model.hidden_size,
                                       par.exchange, par.exchange_chunks, par.count_aware, cfg.model.compute_dtype)
        self.data_sum = placement.data_sum()
        self.global_tokens = float(placement.global_tokens(tokens))
        local = placement.topology.group_local_mask().astype(np.float32)
        self.local_mask = Tensor(local.reshape(-1))
        self.token_group_offset = Tensor(np.repeat(np.array(groups, dtype=np.int32) * moe.expert_num, per_group))
        all_groups = placement.topology.token_groups
        # this process's rows of the cluster's [G, E] load (None: it holds every group)
        self.group_rows = None if len(groups) == all_groups else \
            Tensor(np.eye(all_groups, dtype=np.float32)[:, list(groups)])
        auto_groupwise = par.mode == "auto" and par.exchange == "groupwise" and par.model_parallel > 1
        self.layouts = GroupwiseLayouts(moe.expert_num, len(groups), capacity, cfg.model.hidden_size) \
            if auto_groupwise else None

    @property
    def capacity(self) -> int:
        return self.dispatcher.capacity

    def construct(self, x, token_ids, domain_ids):
        index, score, _, aux, loc = self.router(x, token_ids, domain_ids)
        slot, kept, load = self.dispatcher.assign(index)                  # load [g, E]: this process's groups
        fill = ops.minimum(load, float(self.dispatcher.capacity)).sum(axis=0)
        buffer = self.dispatcher.dispatch(x, slot)
        if self.layouts is not None:
            buffer = self.layouts.dispatched(buffer)
        expert_out, bytes_sent = self.exchange(buffer, fill)
        if self.layouts is not None:
            expert_out = self.layouts.returned(expert_out)
        y = self.dispatcher.combine(expert_out, slot, score)
        if self.group_rows is not None:
            load = ops.matmul(self.group_rows, load)                    # [G, E], zero outside this process's rows
        load = self.data_sum(load)
        dropped_share = 1.0 - self.data_sum(kept.sum()) / self.global_tokens
        local_hits = ops.gather(self.local_mask, self.token_group_offset + index, 0)
        local_share = self.data_sum(local_hits.sum()) / self.global_tokens
        return y, aux, loc, load, dropped_share, local_share, bytes_sent
