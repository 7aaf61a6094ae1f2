"""Experts as one batched FFN over [experts, slots, hidden]: W_out . act(W_in . x) per expert."""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from locmoe_ms.layers import DTYPES, in_dtype


class ExpertActivation(nn.Cell):
    """layers.activation(name) computed from primitives the cell owns, so that auto-parallel can pin each one
    (autoparallel/apply.py PRIMITIVE_OPS) to the experts' layout E:ep GC:edp f:mp: when dp/ep > 1 only a Layout
    keeps that device order, and sharding propagation, left to derive the activation's ops, split them otherwise
    and gathered the whole [E, G*C, f] activation. The same primitives in the same order as ops.gelu (exact:
    x * (1 + erf(x / sqrt 2)) * 0.5; tanh: GeLU), nn.FastGelu and nn.ReLU, so the values are bit-identical."""

    def __init__(self, name: str):
        super().__init__()
        self.exact = name == "gelu"
        if self.exact:
            self.scale_in, self.erf, self.shift = ops.Div(), ops.Erf(), ops.Add()
            self.product, self.scale_out = ops.Mul(), ops.Mul()
        else:
            self.unary = {"gelu_tanh": ops.GeLU, "fast_gelu": ops.FastGeLU, "relu": ops.ReLU}[name]()

    def construct(self, x: Tensor) -> Tensor:
        if self.exact:
            erf = self.erf(self.scale_in(x, ops.sqrt(Tensor(2.0, x.dtype))))
            return self.scale_out(self.product(x, self.shift(erf, Tensor(1.0, x.dtype))), Tensor(0.5, x.dtype))
        return self.unary(x)


class Experts(nn.Cell):
    """[E, slots, h] -> [E, slots, h] in `compute_dtype`: the exchange delivers the slots in it and takes them
    back in it, so the FFN, its bias adds and activation run in it too (the float32 weights cast at each use)."""

    def __init__(self, experts: int, hidden: int, ffn_hidden: int, act: str, init_std: float,
                 compute_dtype: str = "float32"):
        super().__init__()
        self.w_in = Parameter(initializer(Normal(init_std), (experts, hidden, ffn_hidden)), name="w_in")
        self.b_in = Parameter(Tensor(np.zeros((experts, 1, ffn_hidden), np.float32)), name="b_in")
        self.w_out = Parameter(initializer(Normal(init_std), (experts, ffn_hidden, hidden)), name="w_out")
        self.b_out = Parameter(Tensor(np.zeros((experts, 1, hidden), np.float32)), name="b_out")
        self.act = ExpertActivation(act)
        self.dtype = DTYPES[compute_dtype]
        # ops.bmm's primitive, owned so that auto-parallel can pin both matmuls (autoparallel/apply.py PRIMITIVE_OPS)
        self.bmm_in = ops.BatchMatMul()
        self.bmm_out = ops.BatchMatMul()
        self.add_in = ops.Add()  # `+ b_in`'s primitive, owned likewise (pinned with the matmuls' Layout)

    def construct(self, x: Tensor) -> Tensor:
        d = self.dtype
        hidden = self.act(self.add_in(self.bmm_in(x, in_dtype(d, self.w_in)), in_dtype(d, self.b_in)))  # x: in d
        return self.bmm_out(hidden, in_dtype(d, self.w_out)) + in_dtype(d, self.b_out)
