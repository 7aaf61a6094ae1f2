"""Experts as one batched FFN over [experts, slots, hidden]: W_out . act(W_in . x) per expert."""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from locmoe_ms.model.layers import DTYPES, activation, matmul_in


class Experts(nn.Cell):
    def __init__(self, experts: int, hidden: int, ffn_hidden: int, act: str, init_std: float,
                 compute_dtype: str = "float32"):
        super().__init__()
        self.w_in = Parameter(initializer(Normal(init_std), (experts, hidden, ffn_hidden)), name="w_in")
        self.b_in = Parameter(Tensor(np.zeros((experts, 1, ffn_hidden), np.float32)), name="b_in")
        self.w_out = Parameter(initializer(Normal(init_std), (experts, ffn_hidden, hidden)), name="w_out")
        self.b_out = Parameter(Tensor(np.zeros((experts, 1, hidden), np.float32)), name="b_out")
        self.act = activation(act)
        self.dtype = DTYPES[compute_dtype]
        # ops.bmm's primitive, owned so that auto-parallel can pin both matmuls (parallel/context.py PRIMITIVE_OPS)
        self.bmm_in = ops.BatchMatMul()
        self.bmm_out = ops.BatchMatMul()

    def construct(self, x: Tensor) -> Tensor:
        hidden = self.act(matmul_in(self.dtype, x, self.w_in, self.bmm_in) + self.b_in)
        return matmul_in(self.dtype, hidden, self.w_out, self.bmm_out) + self.b_out
