"""How each parameter is split across expert-parallel and tensor-parallel ranks.

One source of truth for the shard strategies (autoparallel/table.py) and the checkpoint tools
(tools/convert_ckpt.py). Expert parameters are split along the expert axis over the expert-parallel group.
Tensor parallelism follows Megatron/PanGu-alpha: column-parallel first projections (query, key, value, FFN w_in,
expert w_in) split their output axis and their bias, row-parallel second projections (attention out, FFN w_out,
expert w_out) split their input axis and keep their bias whole. The word embedding (and so the tied head's logits) is
split on the vocabulary axis, as PanGu-alpha does. Position embeddings, LayerNorms and the gate are replicated.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamSplit:
    expert_axis: int | None = None  # split over expert_parallel ranks
    model_axis: int | None = None   # split over model_parallel ranks


REPLICATED = ParamSplit()

# (name suffix, split); first match wins. Names are those of PanGuSigmaLM's parameters.
_RULES: tuple[tuple[str, ParamSplit], ...] = (
    (".moe.experts.w_in", ParamSplit(expert_axis=0, model_axis=2)),
    (".moe.experts.b_in", ParamSplit(expert_axis=0, model_axis=2)),
    (".moe.experts.w_out", ParamSplit(expert_axis=0, model_axis=1)),
    (".moe.experts.b_out", ParamSplit(expert_axis=0)),
    (".attention.query.weight", ParamSplit(model_axis=1)),
    (".attention.query.bias", ParamSplit(model_axis=0)),
    (".attention.key.weight", ParamSplit(model_axis=1)),
    (".attention.key.bias", ParamSplit(model_axis=0)),
    (".attention.value.weight", ParamSplit(model_axis=1)),
    (".attention.value.bias", ParamSplit(model_axis=0)),
    (".attention.out.weight", ParamSplit(model_axis=0)),
    (".ffn.w_in.weight", ParamSplit(model_axis=1)),
    (".ffn.w_in.bias", ParamSplit(model_axis=0)),
    (".ffn.w_out.weight", ParamSplit(model_axis=0)),
    ("word_embedding", ParamSplit(model_axis=0)),  # vocabulary parallel (auto mode; explicit mode keeps it whole)
)


def parameter_split(name: str) -> ParamSplit:
    """The split of a model parameter, by name (optimizer moments share their parameter's split)."""
    for prefix in ("adam_m.", "adam_v.", "moment1.", "moment2."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    for suffix, split in _RULES:
        if ("." + name).endswith(suffix):
            return split
    return REPLICATED


def is_expert_parameter(name: str) -> bool:
    return parameter_split(name).expert_axis is not None


def expert_shard(name: str, value, block: int, blocks: int):
    """The part of a full parameter (or optimizer moment) that expert-parallel rank `block` of `blocks` holds."""
    axis = parameter_split(name).expert_axis
    if axis is None:
        return value
    per = value.shape[axis] // blocks
    index = [slice(None)] * value.ndim
    index[axis] = slice(block * per, (block + 1) * per)
    return value[tuple(index)]
