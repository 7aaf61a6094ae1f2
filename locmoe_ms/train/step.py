"""One optimizer step over the loss network: value_and_grad, loss scaling, gradient reduction across ranks,
overflow check, clipping, update.

Loss scaling (train.loss_scale) uses MindSpore's own amp.DynamicLossScaler / StaticLossScaler and amp.all_finite:
the loss is multiplied by the scale before the backward pass and the gradients divided by it after; a step whose
gradients are not all finite is skipped (weights and optimizer state untouched) and a dynamic scale backs off;
after loss_scale_window finite steps it grows. Under explicit expert parallelism the ranks agree on the overflow
(a world sum of the flags), so one rank overflowing skips the step on every rank. In auto-parallel mode MindSpore
inserts the gradient collectives itself; the flag is still agreed over the world.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import amp, nn, ops

from locmoe_ms.config import TrainConfig
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


def build_loss_scaler(train: TrainConfig) -> amp.LossScaler | None:
    """MindSpore's scaler for train.loss_scale (None for 'none'), its Parameters named for the checkpoint."""
    if train.loss_scale == "none":
        return None
    if train.loss_scale == "fixed":
        scaler = amp.StaticLossScaler(train.loss_scale_value)
    else:
        scaler = amp.DynamicLossScaler(train.loss_scale_value, train.loss_scale_factor, train.loss_scale_window)
        scaler.counter.name = "loss_scale_counter"
    scaler.scale_value.name = "loss_scale"
    return scaler


class ScaledLoss(nn.Cell):
    """The loss network with its first output (the loss) multiplied by `scale`, so gradients come out scaled."""

    def __init__(self, loss_net: nn.Cell):
        super().__init__(auto_prefix=False)
        self.loss_net = loss_net

    def construct(self, tokens, domains, scale):
        outputs = self.loss_net(tokens, domains)
        return (outputs[0] * scale,) + outputs[1:]


class TrainStep(nn.Cell):
    """construct(tokens, domains[, inject]) -> the loss network's outputs (loss first) + (loss scale, skipped).

    `inject` is a float32 scalar added to one gradient after the backward pass (0, or inf for
    train.inject_overflow_steps): an overflow that goes through the real detection and skip path.
    `placement` is None in auto-parallel mode (MindSpore reduces gradients) or a Placement (explicit mode)."""

    def __init__(self, loss_net: nn.Cell, optimizer: nn.Optimizer, train: TrainConfig,
                 placement: Placement | None = None, world_sum: nn.Cell | None = None):
        super().__init__(auto_prefix=False)  # keep parameter names as the loss network has them
        self.loss_net = loss_net
        self.optimizer = optimizer
        self.grad_clip = train.grad_clip
        self.micro_batches = train.micro_batches
        # which outputs add up over micro-batches (the loss network says; the others are averaged)
        self.micro_sums = loss_net.MICRO_BATCH_SUMS if self.micro_batches > 1 else ()
        self.distributed = placement is not None and placement.distributed
        params = list(optimizer.parameters)
        self.reducer = GradientReducer(params, placement) if self.distributed else None
        self.scaler = build_loss_scaler(train)
        self.scaled = self.scaler is not None
        self.dynamic = train.loss_scale == "dynamic"
        if self.scaled:
            self.loss_scale = self.scaler.scale_value      # registered here, so checkpoints hold the scaler
            if self.dynamic:
                self.loss_scale_counter = self.scaler.counter
        if self.scaled or self.micro_batches > 1:  # micro-batches: each loss scaled by 1 / micro_batches too
            self.value_and_grad = ms.value_and_grad(ScaledLoss(loss_net), None, optimizer.parameters, has_aux=True)
        else:
            self.value_and_grad = ms.value_and_grad(loss_net, None, optimizer.parameters, has_aux=True)
        # the ranks agree on an overflow: a world sum of the flags (identity in one process)
        self.overflow_sum = self.reducer.world_sum if self.distributed else world_sum
        # injected overflows go into the smallest gradient: cheap, and after the reduction, so only this rank has it
        self.inject_index = min(range(len(params)), key=lambda i: params[i].size)

    def construct(self, tokens, domains, inject=None):
        if self.micro_batches > 1:
            outputs, grads = self._accumulate(tokens, domains)
        elif self.scaled:
            outputs, grads = self.value_and_grad(tokens, domains, self.loss_scale)
        else:
            outputs, grads = self.value_and_grad(tokens, domains)
        if self.distributed:
            grads = self.reducer(grads)
        skipped = ops.zeros((), ms.float32)
        scale = ops.ones((), ms.float32)
        if self.scaled:
            scale = self.loss_scale * 1.0
            outputs = (outputs[0] / scale,) + outputs[1:]
            grads = self.scaler.unscale(grads)
            if inject is not None:
                i = self.inject_index
                grads = grads[:i] + (grads[i] + inject,) + grads[i + 1:]
            skipped = 1.0 - amp.all_finite(grads).astype(ms.float32)
            if self.overflow_sum is not None:
                skipped = ops.minimum(self.overflow_sum(skipped), 1.0)
        grads = self._clip(grads)
        if not self.scaled:  # nothing detects overflows: no branch in the graph
            return ops.depend(outputs, self.optimizer(grads)) + (scale, skipped)
        if skipped < 0.5:
            outputs = ops.depend(outputs, self.optimizer(grads))
        if self.dynamic:
            self.scaler.adjust(skipped < 0.5)
        return outputs + (scale, skipped)

    def _accumulate(self, tokens, domains):
        """Gradient accumulation: the micro-batches (consecutive row blocks) one after another, each loss scaled by
        (loss scale) / micro_batches, their gradients summed, so the sum is the gradient of the step's mean loss.
        Each micro-batch starts after the previous one's gradients (ops.depend), so only one micro-batch's
        activations are alive at a time. Outputs: the loss as a sum (unscaled below like one batch's), the other
        outputs averaged, token counts and bytes (MICRO_BATCH_SUMS) summed."""
        k = self.micro_batches
        rows = tokens.shape[0] // k
        scale = (self.loss_scale if self.scaled else ops.ones((), ms.float32)) / k
        outputs, grads = None, None
        for i in range(k):
            part, part_domains = tokens[i * rows:(i + 1) * rows], domains[i * rows:(i + 1) * rows]
            if grads is not None:
                part = ops.depend(part, grads)
            out, g = self.value_and_grad(part, part_domains, scale)
            if grads is None:
                outputs, grads = out, g
            else:
                outputs = tuple(a + b for a, b in zip(outputs, out))
                grads = tuple(a + b for a, b in zip(grads, g))
        outputs = outputs[:1] + tuple(o if summed else o / k for o, summed in zip(outputs[1:], self.micro_sums[1:]))
        return outputs, grads

    def _clip(self, grads):
        if self.grad_clip <= 0:
            return grads
        if self.distributed:
            norm = self.reducer.global_norm(grads)
            factor = self.grad_clip / ops.maximum(norm, self.grad_clip)
            return tuple(g * factor for g in grads)
        return ops.clip_by_global_norm(grads, self.grad_clip)
