"""Capacity slots, dispatch and combine per token group with index gathers (no one-hot [T, E, C] float einsum).

Slots are per (token group, expert): each token group (a data-parallel rank's tokens) fills `capacity` slots of
every expert in token order, as a rank does on a cluster. `assign` numbers slots globally, s = e*(G*C) + g*C +
position, so the dispatched buffer reshapes straight to [E, G*C, h] for the batched expert matmul. Tokens past
capacity go to one dummy slot whose output is zero: the residual connection carries them.

Two forms of dispatch and combine, equal bit for bit (values and gradients are moved, never summed; tested):
- `per_group=False` (explicit mode and one process, the default): a global ScatterNd into the slot buffer and a
  Gather back. Each rank of an explicit job holds one token group, so nothing needs sharding.
- `per_group=True` (auto mode): per token group, batched over G ([G, tokens per group, ...]), every op with G as
  its leading axis, which is how MindSpore auto-parallel can split them over data-parallel ranks
  (autoparallel/table.py, "dispatch" and "combine"); a global ScatterNd has no sharded implementation in
  MindSpore 2.10. The one-hot is an Equal against the expert ids (shardable over G, a 2-D OneHot ran replicated)
  and each slot finds its token through a [G, E*C, t] comparison: on CPU that form made the MoE layer 1.3x slower,
  and under msrun its broadcast Equal desynchronised the ranks' collectives, so CPU runs keep the scatter form.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops


class Dispatcher(nn.Cell):
    """Fills the slot buffer in `dtype` (model.compute_dtype: the exchange and the experts run in it) and combines
    back into float32, the residual stream's dtype; in float32 there is no Cast at all."""

    def __init__(self, experts: int, groups: int, capacity: int, per_group: bool = False, dtype=ms.float32):
        super().__init__()
        self.per_group = per_group
        self.experts = experts
        self.groups = groups
        self.capacity = capacity
        self.slots = experts * groups * capacity
        self.group_slots = experts * capacity
        self.group_offset = Tensor(np.arange(groups, dtype=np.int32).reshape(groups, 1) * capacity)
        self.slot_ids = Tensor(np.arange(self.group_slots, dtype=np.int32).reshape(1, self.group_slots, 1))
        self.expert_ids = Tensor(np.arange(experts, dtype=np.int32).reshape(1, 1, experts))
        self.capacity_bound = Tensor(np.array([[capacity]], np.int32))
        self.zero = Tensor(np.zeros((1, 1), np.int32))
        # primitives owned so that auto-parallel can pin them over G (autoparallel: apply.PRIMITIVE_OPS, table.OPS)
        self.match = ops.Equal()
        self.pad_tokens = ops.Concat(axis=1)
        self.pad_slots = ops.Concat(axis=1)
        self.gather_slots = ops.GatherD()
        self.gather_tokens = ops.GatherD()
        self.dtype = dtype
        self.to_compute = ops.Cast() if dtype != ms.float32 else None
        self.to_float32 = ops.Cast() if dtype != ms.float32 else None

    def assign(self, index: Tensor):
        """Expert index [T] -> slot [T] int32 (dummy slot for dropped tokens), kept [T] f32, load [G, E] f32 (tokens
        each token group routes to each expert)."""
        per_group = index.reshape(self.groups, -1)
        # one-hot as a comparison and bounds as tensors: MindSpore shards Equal/Less over G, not a 2-D OneHot or a
        # comparison with a Python scalar (both ran replicated in the dry-run compile); zeros_like likewise
        if self.per_group:
            onehot = ops.equal(per_group.reshape(self.groups, -1, 1), self.expert_ids).astype(ms.float32)
        else:
            onehot = ops.one_hot(per_group, self.experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        position = (ops.cumsum(onehot, axis=1) * onehot).sum(axis=-1).astype(ms.int32) - 1
        kept = ops.less(position, self.capacity_bound)
        slot = per_group * (self.groups * self.capacity) + self.group_offset + position
        slot = ops.where(kept, slot, ops.full_like(slot, self.slots))
        return slot.reshape(-1), kept.reshape(-1).astype(ms.float32), onehot.sum(axis=1)

    def group_slot(self, slot: Tensor) -> Tensor:
        """Global slot [T] -> slot inside the token group's [E*C] buffer, [G, t] (the dummy slot -> E*C)."""
        group_capacity = self.groups * self.capacity
        local = (slot // group_capacity) * self.capacity + slot % self.capacity
        return local.reshape(self.groups, -1)

    def dispatch(self, x: Tensor, slot: Tensor) -> Tensor:
        """[T, h] -> [E, G*C, h]; empty slots are zero."""
        hidden = x.shape[-1]
        if not self.per_group:
            if self.to_compute is not None:
                x = self.to_compute(x, self.dtype)
            buffer = ops.scatter_nd(slot.reshape(-1, 1), x, (self.slots + 1, hidden))
            return buffer[: self.slots].reshape(self.experts, self.groups * self.capacity, hidden)
        local = self.group_slot(slot)                                               # [G, t]
        per_group = local.shape[1]
        # token of every slot of the group (per_group, the zero row, where the slot is empty)
        match = self.match(local.reshape(self.groups, 1, per_group), self.slot_ids)  # [G, E*C, t]
        token_ids = ops.arange(1, per_group + 1, dtype=ms.int32).reshape(1, 1, per_group)
        token = (match.astype(ms.int32) * token_ids).sum(axis=-1) - 1               # [G, E*C], -1: empty
        token = ops.where(ops.less(token, self.zero), ops.full_like(token, per_group), token)
        grouped = x.reshape(self.groups, per_group, hidden)
        if self.to_compute is not None:
            grouped = self.to_compute(grouped, self.dtype)
        padded = self.pad_tokens((grouped, ops.zeros_like(grouped[:, :1])))          # [G, t+1, h]
        index = ops.broadcast_to(token.reshape(self.groups, self.group_slots, 1),
                                 (self.groups, self.group_slots, hidden))
        buffer = self.gather_slots(padded, 1, index)                                # [G, E*C, h]
        buffer = buffer.reshape(self.groups, self.experts, self.capacity, hidden).transpose(1, 0, 2, 3)
        return buffer.reshape(self.experts, self.groups * self.capacity, hidden)

    def combine(self, expert_out: Tensor, slot: Tensor, weight: Tensor) -> Tensor:
        """[E, G*C, h] -> [T, h] in float32, each token's slot scaled by its router score;
        dropped tokens get zero."""
        hidden = expert_out.shape[-1]
        if not self.per_group:
            flat = ops.concat((expert_out.reshape(self.slots, hidden), ops.zeros((1, hidden), expert_out.dtype)),
                              axis=0)
            out = ops.gather(flat, slot, 0)
            if self.to_float32 is not None:
                out = self.to_float32(out, ms.float32)
            return out * weight.reshape(-1, 1)
        local = self.group_slot(slot)                                               # [G, t]
        per_group = local.shape[1]
        grouped = expert_out.reshape(self.experts, self.groups, self.capacity, hidden).transpose(1, 0, 2, 3)
        grouped = grouped.reshape(self.groups, self.group_slots, hidden)
        grouped = self.pad_slots((grouped, ops.zeros_like(grouped[:, :1])))          # [G, E*C+1, h]
        index = ops.broadcast_to(local.reshape(self.groups, per_group, 1), (self.groups, per_group, hidden))
        out = self.gather_tokens(grouped, 1, index)                                  # [G, t, h]
        if self.to_float32 is not None:
            out = self.to_float32(out, ms.float32)
        return out.reshape(self.groups * per_group, hidden) * weight.reshape(-1, 1)
