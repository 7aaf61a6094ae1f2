"""One optimizer step over the loss network: value_and_grad, gradient reduction across ranks, clipping, update."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from locmoe_ms.parallel.layout import is_expert_parameter
from locmoe_ms.parallel.placement import Placement


class GradientReducer(nn.Cell):
    """Across ranks: each parameter's gradient summed over the ranks holding a copy of it, divided by the world.

    Every rank differentiates the same global loss through collectives whose backward passes are adjoints, so the
    sum over copies is world_size times the true gradient. Dense parameters live on every rank; an expert block
    on its expert-replica group. `global_norm` is the norm of the whole model's gradient, every block counted once.
    """

    def __init__(self, params: list, placement: Placement):
        super().__init__()
        topo, comm, rank = placement.topology, placement.comm, placement.rank
        self.expert_flags = tuple(is_expert_parameter(p.name) for p in params)
        self.world_sum = comm.all_reduce(tuple(range(comm.world)))
        self.replica_sum = comm.all_reduce(topo.expert_replica_group(rank))
        self.scale = 1.0 / comm.world
        self.copies_per_block = float(len(topo.expert_replica_group(rank)))

    def construct(self, grads):
        reduced = ()
        for flag, grad in zip(self.expert_flags, grads):
            total = self.replica_sum(grad) if flag else self.world_sum(grad)
            reduced += (total * self.scale,)
        return reduced

    def global_norm(self, grads):
        dense = ops.zeros((), ms.float32)
        expert = ops.zeros((), ms.float32)
        for flag, grad in zip(self.expert_flags, grads):
            if flag:
                expert = expert + (grad * grad).sum()
            else:
                dense = dense + (grad * grad).sum()
        return ops.sqrt(dense + self.world_sum(expert) / self.copies_per_block)


class TrainStep(nn.Cell):
    """construct(*inputs) -> the loss network's outputs (loss first), after one update of `optimizer`."""

    def __init__(self, loss_net: nn.Cell, optimizer: nn.Optimizer, grad_clip: float = 0.0,
                 placement: Placement | None = None):
        super().__init__(auto_prefix=False)  # keep parameter names as the loss network has them
        self.loss_net = loss_net
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.value_and_grad = ms.value_and_grad(loss_net, None, optimizer.parameters, has_aux=True)
        self.distributed = placement is not None and placement.distributed
        self.reducer = GradientReducer(list(optimizer.parameters), placement) if self.distributed else None

    def construct(self, *inputs):
        outputs, grads = self.value_and_grad(*inputs)
        if self.distributed:
            grads = self.reducer(grads)
            if self.grad_clip > 0:
                norm = self.reducer.global_norm(grads)
                factor = self.grad_clip / ops.maximum(norm, self.grad_clip)
                grads = tuple(g * factor for g in grads)
        elif self.grad_clip > 0:
            grads = ops.clip_by_global_norm(grads, self.grad_clip)
        self.optimizer(grads)
        return outputs
