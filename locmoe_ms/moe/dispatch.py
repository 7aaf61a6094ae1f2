"""Capacity slots, dispatch and combine with index scatter/gather (no one-hot [T, E, C] einsum).

Slots are per (token group, expert): each token group (a data-parallel rank's tokens) fills `capacity` slots of
every expert in token order, as a rank does on a cluster. Slot s = e*(G*C) + g*C + position, so the dispatched
buffer reshapes straight to [E, G*C, h] for the batched expert matmul. Tokens past capacity go to one dummy slot
whose output is zero: the residual connection carries them.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops


class Dispatcher(nn.Cell):
    def __init__(self, experts: int, groups: int, capacity: int):
        super().__init__()
        self.experts = experts
        self.groups = groups
        self.capacity = capacity
        self.slots = experts * groups * capacity
        self.group_offset = Tensor(np.arange(groups, dtype=np.int32).reshape(groups, 1) * capacity)

    def assign(self, index: Tensor):
        """Expert index [T] -> slot [T] int32 (dummy slot for dropped tokens), kept [T] f32, load [E] f32."""
        per_group = index.reshape(self.groups, -1)
        onehot = ops.one_hot(per_group, self.experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        position = (ops.cumsum(onehot, axis=1) * onehot).sum(axis=-1).astype(ms.int32) - 1
        kept = position < self.capacity
        slot = per_group * (self.groups * self.capacity) + self.group_offset + position
        slot = ops.where(kept, slot, ops.full_like(slot, self.slots))
        return slot.reshape(-1), kept.reshape(-1).astype(ms.float32), onehot.sum(axis=(0, 1))

    def dispatch(self, x: Tensor, slot: Tensor) -> Tensor:
        """[T, h] -> [E, G*C, h]; empty slots are zero."""
        hidden = x.shape[-1]
        buffer = ops.scatter_nd(slot.reshape(-1, 1), x, (self.slots + 1, hidden))
        return buffer[: self.slots].reshape(self.experts, self.groups * self.capacity, hidden)

    def combine(self, expert_out: Tensor, slot: Tensor, weight: Tensor) -> Tensor:
        """[E, G*C, h] -> [T, h], each token's slot scaled by its router score; dropped tokens get zero."""
        hidden = expert_out.shape[-1]
        flat = ops.concat((expert_out.reshape(self.slots, hidden), ops.zeros((1, hidden), expert_out.dtype)), axis=0)
        return ops.gather(flat, slot, 0) * weight.reshape(-1, 1)
