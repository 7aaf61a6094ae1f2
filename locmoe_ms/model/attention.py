"""Causal multi-head self-attention; the query may come from a separate tensor (PanGu-alpha's query layer)."""
from __future__ import annotations

import math

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops.auto_generate import MatMulExt

from locmoe_ms.layers import DTYPES, Linear, matmul_in


class Attention(nn.Cell):
    def __init__(self, hidden: int, heads: int, seq_length: int, init_std: float, compute_dtype: str = "float32",
                 dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = Linear(hidden, hidden, init_std, compute_dtype)
        self.key = Linear(hidden, hidden, init_std, compute_dtype)
        self.value = Linear(hidden, hidden, init_std, compute_dtype)
        self.out = Linear(hidden, hidden, init_std, compute_dtype)
        self.dtype = DTYPES[compute_dtype]
        self.scale = 1.0 / math.sqrt(self.head_dim)
        causal = np.triu(np.full((seq_length, seq_length), -1e9, dtype=np.float32), k=1)
        self.causal_bias = Tensor(causal)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        # the primitives ops.matmul / ops.softmax call, owned so that auto-parallel can pin them over (dp, heads:mp)
        # (autoparallel/apply.py PRIMITIVE_OPS); left to sharding propagation, they were split otherwise
        self.broadcast = ops.Add()  # [B, S, h] zeros + the query layer's [S, h]: a broadcast whose layout can be pinned
        self.scores_matmul = MatMulExt()
        self.softmax = ops.Softmax(axis=-1)
        self.context_matmul = MatMulExt()

    def _heads(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        return x.reshape(b, s, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x: Tensor, query_input: Tensor) -> Tensor:
        """x [B, S, h] gives keys and values; query_input [B, S, h] (or [S, h]) gives queries."""
        b, s, h = x.shape
        q = self.query(query_input)
        if len(query_input.shape) == 2:  # the top query layer: one query embedding for every sequence
            q = self.broadcast(ops.zeros_like(x), q)
        k, v = self.key(x), self.value(x)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scores = matmul_in(self.dtype, q, k.transpose(0, 1, 3, 2), self.scores_matmul) * self.scale \
            + self.causal_bias[:s, :s]
        probs = self.dropout(self.softmax(scores))  # float32
        context = matmul_in(self.dtype, probs, v, self.context_matmul).transpose(0, 2, 1, 3).reshape(b, s, h)
        return self.out(context)
