"""Sparse upcycling: a dense model's FFN copied into every expert of the chosen layers, a fresh gate in front.

In a sparse layer the FFN's LayerNorm becomes ln_moe and w_in/b_in/w_out/b_out of every expert are the FFN's
weights and biases; attention, embeddings and all other blocks are copied; the router's parameters are those a
fresh model of the target config starts with. With a fixed router (hash, rre: score 1) and no dropped token
the upcycled model computes exactly the dense model; with a learned router (locmoe, switch) each MoE output is the
dense FFN output times the router probability of the chosen expert.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from locmoe_ms.ckpt import io
from locmoe_ms.ckpt.fresh import fresh_parameters, is_router_parameter
from locmoe_ms.config import Config, apply_overrides, config_from_dict
from locmoe_ms.errors import UserInputError

BLOCK = re.compile(r"^(network\.blocks\.(\d+)\.)(.+)$")
# expert parameter [E, ...] <- dense FFN parameter, reshaped to one expert's shape
FROM_FFN = {"moe.experts.w_in": "ffn.w_in.weight", "moe.experts.b_in": "ffn.w_in.bias",
            "moe.experts.w_out": "ffn.w_out.weight", "moe.experts.b_out": "ffn.w_out.bias"}


def default_sparse_layers(num_layers: int) -> list[int]:
    """Every second block starting at 1, as in the shipped configs."""
    return list(range(1, num_layers, 2))


def upcycled_config(dense: Config, experts: int, router: str, sparse_layers: list[int] | None,
                    overrides: list[str] | None = None) -> Config:
    raw = dense.to_dict()
    raw["model"]["sparse_layers"] = default_sparse_layers(dense.model.num_layers) if sparse_layers is None \
        else sparse_layers
    raw["moe_config"].update(expert_num=experts, router=router)
    try:
        return config_from_dict(apply_overrides(raw, overrides or []))
    except UserInputError as err:
        raise UserInputError(f"the upcycled config is invalid: {err}") from None


def _source(name: str, sparse: set[int]) -> tuple[str, bool]:
    """(dense parameter that fills `name`, whether it is copied into every expert)."""
    match = BLOCK.match(name)
    if not match or int(match[2]) not in sparse:
        return name, False
    prefix, rest = match[1], match[3]
    if rest.startswith("ln_moe."):
        return prefix + "ln_ffn." + rest[len("ln_moe."):], False
    if rest in FROM_FFN:
        return prefix + FROM_FFN[rest], True
    return name, False


def upcycle(path: Path, experts: int, router: str, sparse_layers: list[int] | None = None,
            overrides: list[str] | None = None) -> tuple[io.Params, dict]:
    """(model parameters of the sparse model, metadata at step 0 with its config)."""
    params, meta = io.read(path)
    dense = io.config_of(path, meta)
    if dense.model.sparse_layers:
        raise UserInputError(f"{path}: not a dense model (model.sparse_layers = {dense.model.sparse_layers}); "
                             f"upcycle needs a model trained with sparse_layers []")
    cfg = upcycled_config(dense, experts, router, sparse_layers, overrides)
    sparse = set(cfg.model.sparse_layers)
    out, used = {}, set()
    for name, init in fresh_parameters(cfg).items():
        if is_router_parameter(name):
            out[name] = init
            continue
        source, per_expert = _source(name, sparse)
        if source not in params:
            raise UserInputError(f"{path}: lacks {source}, needed for {name}; was it saved with another config?")
        value = params[source]
        if per_expert and value.size == int(np.prod(init.shape[1:])):
            value = np.broadcast_to(value.reshape(init.shape[1:]), init.shape)
        if value.shape != init.shape:
            raise UserInputError(f"{path}: {source} has shape {value.shape}; {name} needs {init.shape}")
        out[name] = io.contiguous(value)
        used.add(source)
    unused = sorted(n for n in params if io.is_model_parameter(n) and n not in used)
    if unused:
        raise UserInputError(f"{path}: {unused[0]} has no place in the upcycled model; was it saved with another "
                             f"config?")
    return out, {"step": 0, "config_json": io.config_json(cfg), "format_version": meta.get("format_version", 1)}
