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
from mindspore.ops.auto_generate import MatMulExt


def grap_weight(experts: int, hidden: int) -> np.ndarray:
    """W[i, j] = n/d where floor(j*n/d) == i, else 0: disjoint contiguous blocks, orthogonal rows."""
    if hidden < experts:
        raise ValueError(f"GrAP needs hidden ({hidden}) >= experts ({experts})")
    rows = (np.arange(hidden) * experts) // hidden
    weight = np.zeros((experts, hidden), dtype=np.float32)
    weight[rows, np.arange(hidden)] = experts / hidden
    return weight


class GrAPGate(nn.Cell):
    """G = ReLU(W x + b) with W = grap_weight fixed (a constant, not a parameter) and b learnable (zero init);
    G = W x + b without the ReLU when `relu` is false (moe_config.grap_relu, a health option).

    W x is one matmul with the constant [d, n] matrix: its backward needs only dx = dG W (no weight gradient, no
    [d, n] parameter to learn, store or all-reduce), which is GrAP's saving over a dense gate. A grouped sum
    (O(T*d) instead of O(T*d*n) FLOPs) was measured slower on this CPU: reshaped to [T*n, d/n] its backward is an
    outer product with K = 1, which BLAS runs far below peak (bench_moe_layer.py: 1.3-1.5x the dense gate)."""

    def __init__(self, hidden: int, experts: int, relu: bool = True):
        super().__init__()
        self.experts = experts
        self.relu = relu
        self.hidden = hidden
        self.weight = Tensor(grap_weight(experts, hidden))
        self.bias = Parameter(Tensor(np.zeros(experts, np.float32)), name="bias")
        self.matmul = MatMulExt()  # ops.matmul's, owned: auto-parallel pins it over dp (autoparallel/apply.py)

    def construct(self, x: Tensor):
        pre = self.matmul(x, self.weight.T) + self.bias
        if self.relu:
            return ops.relu(pre), pre
        return pre, pre


class DenseGate(nn.Cell):
    """G = W x with W learnable and no bias: Switch Transformer's router (Fedus et al. 2021, h(x) = W_r x)."""

    def __init__(self, hidden: int, experts: int, init_std: float = 0.02):
        super().__init__()
        self.weight = Parameter(initializer(Normal(init_std), (hidden, experts)), name="weight")
        self.matmul = MatMulExt()  # ops.matmul's, owned: auto-parallel pins it over dp (autoparallel/apply.py)

    def construct(self, x: Tensor):
        logits = self.matmul(x, self.weight)
        return logits, logits
