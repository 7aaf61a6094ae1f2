"""Gates: token -> expert logits. GrAP (fixed orthogonal grouped average pooling) and a dense layer.

A gate returns (logits [T, n], order [T, n]): `order` breaks ties between equal logits. GrAP's ReLU makes ties
common (every expert at 0 when all pre-activations are negative); taking the first expert then, as a plain
argmax does, sends every such token to expert 0, and since a dead ReLU passes no gradient the gate never recovers:
in our runs both sparse layers collapsed onto expert 0 within 150 steps. GrAP orders ties by the pre-activation.
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer


def grap_weight(experts: int, hidden: int) -> np.ndarray:
    """W[i, j] = n/d where floor(j*n/d) == i, else 0: disjoint contiguous blocks, orthogonal rows."""
    if hidden < experts:
        raise ValueError(f"GrAP needs hidden ({hidden}) >= experts ({experts})")
    rows = (np.arange(hidden) * experts) // hidden
    weight = np.zeros((experts, hidden), dtype=np.float32)
    weight[rows, np.arange(hidden)] = experts / hidden
    return weight


class GrAPGate(nn.Cell):
    """G = ReLU(W x + b) with W = grap_weight fixed and b learnable (zero init). O(T*d): a grouped sum, not a dense
    [d, n] matmul, when d is a multiple of n; otherwise the fixed W is applied as a matmul (blocks of unequal size)."""

    def __init__(self, hidden: int, experts: int):
        super().__init__()
        self.experts = experts
        self.hidden = hidden
        self.divisible = hidden % experts == 0
        self.group = hidden // experts
        # grouped sum as one matrix-vector product: [T*n, d/n] @ [d/n, 1] of n/d (O(T*d), a single BLAS call;
        # MindSpore's CPU ReduceSum over the last axis is several times slower)
        self.group_weights = Tensor(np.full((max(self.group, 1), 1), experts / hidden, np.float32))
        self.weight_t = Tensor(grap_weight(experts, hidden).T)
        self.bias = Parameter(Tensor(np.zeros(experts, np.float32)), name="bias")

    def construct(self, x: Tensor) -> Tensor:
        if self.divisible:
            tokens = x.shape[0]
            pooled = ops.matmul(x.reshape(tokens * self.experts, self.group), self.group_weights)
            pooled = pooled.reshape(tokens, self.experts)
        else:
            pooled = ops.matmul(x, self.weight_t)
        pre = pooled + self.bias
        return ops.relu(pre), pre


class DenseGate(nn.Cell):
    """G = W x with W learnable and no bias: Switch Transformer's router (Fedus et al. 2021, h(x) = W_r x)."""

    def __init__(self, hidden: int, experts: int, init_std: float = 0.02):
        super().__init__()
        self.weight = Parameter(initializer(Normal(init_std), (hidden, experts)), name="weight")

    def construct(self, x: Tensor):
        logits = ops.matmul(x, self.weight)
        return logits, logits
