"""One optimizer step over the loss network: value_and_grad, global-norm clipping, update."""
from __future__ import annotations

from mindspore import nn, ops
import mindspore as ms


class TrainStep(nn.Cell):
    """construct(*inputs) -> the loss network's outputs (loss first), after one update of `optimizer`."""

    def __init__(self, loss_net: nn.Cell, optimizer: nn.Optimizer, grad_clip: float = 0.0):
        super().__init__(auto_prefix=False)  # keep parameter names as the loss network has them
        self.loss_net = loss_net
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.value_and_grad = ms.value_and_grad(loss_net, None, optimizer.parameters, has_aux=True)

    def construct(self, *inputs):
        outputs, grads = self.value_and_grad(*inputs)
        if self.grad_clip > 0:
            grads = ops.clip_by_global_norm(grads, self.grad_clip)
        self.optimizer(grads)
        return outputs
