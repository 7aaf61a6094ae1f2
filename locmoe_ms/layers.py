"""Small building blocks shared by dense and sparse layers: activation, linear layer, dense FFN."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer
from mindspore.ops.auto_generate import MatMulExt

DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def matmul_in(dtype, x: Tensor, w: Tensor, matmul=ops.matmul) -> Tensor:
    """x @ w computed in `dtype` (float16/bfloat16 on Ascend), returned as float32: matmuls run in the compute
    dtype while LayerNorm, softmax, the router and the losses stay float32, as PanGu-Sigma trains on the 910A."""
    if dtype == ms.float32:
        return matmul(x, w)
    return matmul(x.astype(dtype), w.astype(dtype)).astype(ms.float32)


def in_dtype(dtype, x: Tensor) -> Tensor:
    """x in `dtype`; no Cast at all when that is float32 (float32 graphs stay as they were, bit for bit)."""
    return x if dtype == ms.float32 else x.astype(dtype)


def activation(name: str) -> nn.Cell:
    """The FFN activation; 'gelu' is the paper's exact (erf) GeLU."""
    cells = {"gelu": lambda: nn.GELU(approximate=False), "gelu_tanh": lambda: nn.GELU(approximate=True),
             "fast_gelu": nn.FastGelu, "relu": nn.ReLU}
    return cells[name]()


class BiasAdd(nn.Cell):
    """x + b for a bias over the last axis, with the bias gradient computed as a product with ones: MindSpore's CPU
    ReduceSum, which autodiff uses for it, took 14% of a training step's operator time. (For the experts' [E, 1, f]
    biases a batched product with ones was slower than ReduceSum, so they keep the plain add.)"""

    def construct(self, x: Tensor, b: Tensor) -> Tensor:
        return x + b

    def bprop(self, x, b, out, dout):
        flat = dout.reshape(-1, dout.shape[-1])
        return dout, ops.matmul(ops.ones((1, flat.shape[0]), dout.dtype), flat).reshape(b.shape)


class Linear(nn.Cell):
    """y = x W + b with W [in, out]; the matmul runs in `compute_dtype`, the result is float32."""

    def __init__(self, n_in: int, n_out: int, init_std: float, compute_dtype: str = "float32", bias: bool = True):
        super().__init__()
        self.weight = Parameter(initializer(Normal(init_std), (n_in, n_out)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(n_out, np.float32)), name="bias") if bias else None
        self.add_bias = BiasAdd()
        self.dtype = DTYPES[compute_dtype]
        self.matmul = MatMulExt()  # ops.matmul's primitive, owned so that auto-parallel pins it (autoparallel/apply.py)

    def construct(self, x: Tensor) -> Tensor:
        y = matmul_in(self.dtype, x, self.weight, self.matmul)
        if self.bias is not None:
            y = self.add_bias(y, self.bias)
        return y


class FeedForward(nn.Cell):
    """Dense FFN: W_out . act(W_in . x)."""

    def __init__(self, hidden: int, ffn_hidden: int, act: str, init_std: float, compute_dtype: str = "float32"):
        super().__init__()
        self.w_in = Linear(hidden, ffn_hidden, init_std, compute_dtype)
        self.act = activation(act)
        self.w_out = Linear(ffn_hidden, hidden, init_std, compute_dtype)

    def construct(self, x: Tensor) -> Tensor:
        return self.w_out(self.act(self.w_in(x)))
