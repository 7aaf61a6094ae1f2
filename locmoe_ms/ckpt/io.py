"""Read and write checkpoints (.ckpt or .safetensors, chosen by suffix) as (params, meta): CRC-checked, atomic.

MindSpore's safetensors writer stores numbers only (a string entry fails with 'Unknown dtype'), so a string
metadata value such as config_json is stored there as its UTF-8 bytes, a uint8 tensor named `__utf8__.<key>`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from mindspore import Parameter, Tensor

from locmoe_ms.ckpt.paths import format_of, refuse_overwrite, require_format
from locmoe_ms.config import Config, ConfigError, config_from_dict
from locmoe_ms.errors import UserInputError
from locmoe_ms.train import checkpoint

STRING_PREFIX = checkpoint.STRING_PREFIX
MODEL_PREFIX = checkpoint.MODEL_PREFIX
WORLD_KEYS = ("rank", "world_size", "expert_parallel_rank", "model_parallel_rank")  # only in per-rank shards

Params = dict[str, np.ndarray]


is_model_parameter = checkpoint.is_model_parameter


def contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (np.ascontiguousarray alone makes a 0-d array, the loss scale, 1-d)."""
    return np.ascontiguousarray(array).reshape(array.shape)


def read(path: str | Path) -> tuple[Params, dict]:
    """(parameters as NumPy arrays, metadata); a missing, corrupted or foreign file is a one-line error."""
    params, meta = checkpoint.load(path, format_of(Path(path)))
    return {name: value.asnumpy() for name, value in params.items()}, meta


def write(path: str | Path, params: Params, meta: dict) -> Path:
    """Save atomically (checkpoint.atomic_save); the format follows the suffix."""
    path = Path(path)
    fmt = format_of(path)
    entries = {name: Parameter(Tensor.from_numpy(contiguous(a)), name=name) for name, a in params.items()}
    append = {}
    for key, value in meta.items():
        if value is None:
            continue
        if fmt == "safetensors" and isinstance(value, str):
            name = STRING_PREFIX + key
            data = np.frombuffer(value.encode("utf-8"), np.uint8).copy()
            entries[name] = Parameter(Tensor.from_numpy(data), name=name)
        else:
            append[key] = value
    return checkpoint.atomic_save(entries, path, append, fmt)


def config_of(path: str | Path, meta: dict) -> Config:
    """The validated config recorded in a checkpoint."""
    raw = checkpoint.config_of(meta)
    if not raw:
        raise UserInputError(f"{path}: no config_json recorded in the checkpoint")
    try:
        return config_from_dict(raw)
    except ConfigError as err:
        raise UserInputError(f"{path}: the recorded config is invalid: {err}") from None


def config_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict())


def convert(path: Path, output: Path, to: str) -> Path:
    """The same tensors and metadata in the other file format."""
    require_format(output, to)
    refuse_overwrite(output, [path])
    params, meta = read(path)
    return write(output, params, meta)
