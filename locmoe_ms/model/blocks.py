"""Transformer blocks (pre-LayerNorm): dense, sparse (attention + MoE layer) and PanGu-alpha's top query layer."""
from __future__ import annotations

from mindspore import Tensor, nn

from locmoe_ms.config import Config
from locmoe_ms.model.attention import Attention
from locmoe_ms.layers import FeedForward
from locmoe_ms.moe.layer import MoELayer
from locmoe_ms.parallel.placement import Placement


def _attention(cfg: Config) -> Attention:
    m = cfg.model
    return Attention(m.hidden_size, m.num_heads, m.seq_length, m.init_std, m.compute_dtype, m.dropout)


def _feed_forward(cfg: Config) -> FeedForward:
    m = cfg.model
    return FeedForward(m.hidden_size, m.ffn_hidden_size, m.activation, m.init_std, m.compute_dtype)


class DenseBlock(nn.Cell):
    """x + attn(ln(x)); x + ffn(ln(x)). With a separate query input this is the top query layer."""

    def __init__(self, cfg: Config):
        super().__init__()
        eps = cfg.model.layernorm_eps
        self.ln_attention = nn.LayerNorm((cfg.model.hidden_size,), epsilon=eps)
        self.attention = _attention(cfg)
        self.ln_ffn = nn.LayerNorm((cfg.model.hidden_size,), epsilon=eps)
        self.ffn = _feed_forward(cfg)

    def construct(self, x: Tensor, query_input: Tensor = None) -> Tensor:
        normed = self.ln_attention(x)
        x = x + self.attention(normed, normed if query_input is None else query_input)
        return x + self.ffn(self.ln_ffn(x))


class SparseBlock(nn.Cell):
    """x + attn(ln(x)); x + moe(ln(x)). Tokens the MoE layer drops keep their residual value."""

    def __init__(self, cfg: Config, placement: Placement, tokens: int):
        super().__init__()
        eps = cfg.model.layernorm_eps
        self.ln_attention = nn.LayerNorm((cfg.model.hidden_size,), epsilon=eps)
        self.attention = _attention(cfg)
        self.ln_moe = nn.LayerNorm((cfg.model.hidden_size,), epsilon=eps)
        self.moe = MoELayer(cfg, placement, tokens)

    def construct(self, x: Tensor, token_ids: Tensor, domain_ids: Tensor):
        b, s, h = x.shape
        normed = self.ln_attention(x)
        x = x + self.attention(normed, normed)
        y, *stats = self.moe(self.ln_moe(x).reshape(b * s, h), token_ids, domain_ids)
        return (x + y.reshape(b, s, h), *stats)
