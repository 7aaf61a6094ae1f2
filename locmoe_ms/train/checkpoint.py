"""Training checkpoints with MindSpore's own format and CRC: atomic writes, the last K kept, metadata inside.

A checkpoint holds every parameter of the train step cell (model weights, optimizer moments, its global step) and,
through `append_dict`, the training step, the data position and the config, so `--resume` continues exactly.
In auto mode a rank writes only its own slices (MindSpore's `integrated_save=False`), with the digest of the job's
strategy checkpoint (every parameter's layout, written by MindSpore when the graph compiles); tools/convert_ckpt.py
merges, splits and reshards such slices with MindSpore's strategy-based transforms.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

import mindspore as ms
from mindspore import nn

from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import input_file

NAME = re.compile(r"^step_(\d{8})\.ckpt$")
# Parameters rebuilt from the config rather than restored: the optimizer's learning-rate schedule array.
DERIVED = ("learning_rate",)
# MindSpore's safetensors writer stores numbers only, so tools/convert_ckpt.py stores a string metadata value
# (config_json) as a uint8 tensor of its UTF-8 bytes under this prefix.
STRING_PREFIX = "__utf8__."
MODEL_PREFIX = "network."  # model parameters; optimizer moments are adam_m.network.*, adam_v.network.*
# Config keys that define the model's parameters or its routing function: a checkpoint is loaded (resume, eval)
# only under the same values. Others (learning rate, capacity, dropout, compute_dtype, ...) may change.
MODEL_KEYS = ("model.vocab_size", "model.hidden_size", "model.num_heads", "model.ffn_hidden_size", "model.num_layers",
              "model.sparse_layers", "model.seq_length", "model.activation", "model.layernorm_eps",
              "moe_config.expert_num", "moe_config.router", "moe_config.rre_groups", "moe_config.rre_group_by",
              "moe_config.hash_seed", "data.tokenizer", "data.vocab_limit")
# With data.vocab_limit the token ids come from the training split's frequencies, so these define them too.
VOCABULARY_KEYS = ("data.corpus", "data.paths", "data.max_documents", "data.valid_fraction", "data.test_fraction")
META_KEYS = ("step", "data_epoch", "data_index", "data_state", "config_json", "valid_ppl", "format_version",
             "rank", "world_size", "expert_parallel_rank", "model_parallel_rank",  # these four: per-rank shards
             "mode", "strategy_digest")  # auto mode's slices: 'auto' and the digest of the job's strategy
STRATEGY_FILE = "strategy.ckpt"  # auto mode: MindSpore's strategy checkpoint, in each rank's output directory


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.ckpt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if NAME.match(p.name))


def atomic_save(save_obj, path: Path, append: dict | None, file_format: str = "ckpt", sliced: bool = False) -> Path:
    """MindSpore's save_checkpoint (with CRC) into a temporary file beside `path`, then a rename: a reader never
    sees a half-written checkpoint, and a failed write leaves nothing behind. `sliced`: an auto-parallel cell's
    own slices, as this rank holds them (without it MindSpore gathers every parameter to its full shape)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp_{path.name}"  # keeps the suffix, or MindSpore would append one
    try:
        ms.save_checkpoint(save_obj, str(tmp), append_dict=append or None, crc_check=True, format=file_format,
                           integrated_save=not sliced)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save(cell: nn.Cell, directory: Path, step: int, meta: dict, keep: int, sliced: bool = False) -> Path:
    """Write step_XXXXXXXX.ckpt atomically (`sliced`: this rank's slices only), then drop all but the newest
    `keep`."""
    final = checkpoint_path(directory, step)
    append = {k: v for k, v in meta.items() if v is not None}
    append.update(step=int(step), format_version=1)
    atomic_save(cell, final, append, sliced=sliced)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return final


@contextmanager
def _quiet_logs():
    """Mute Python logging while MindSpore reads: for a bad file it logs an [ERROR] line besides raising, and the
    raised error becomes our one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def load(path: str | Path, file_format: str = "ckpt") -> tuple[dict, dict]:
    """(parameters, metadata) of a checkpoint (.ckpt, or .safetensors written by tools/convert_ckpt.py); a
    missing, corrupted or truncated file is a one-line error."""
    path = input_file(path, what="checkpoint")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: checkpoint is empty")
    try:
        with _quiet_logs():
            params = ms.load_checkpoint(str(path), crc_check=True, format=file_format)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError/TypeError for bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{path}: corrupted or truncated checkpoint ({reason[:160]})") from None
    meta = {}
    for name in list(params):
        if name.startswith(STRING_PREFIX):  # safetensors holds strings as UTF-8 bytes
            meta[name[len(STRING_PREFIX):]] = params.pop(name).asnumpy().tobytes().decode("utf-8")
        elif name in META_KEYS:
            value = params.pop(name)
            meta[name] = value.asnumpy().item() if hasattr(value, "asnumpy") else value
    if "step" not in meta:
        raise UserInputError(f"{path}: not a locmoe-train checkpoint (no step recorded)")
    return params, meta


def strategy_layouts(path: str | Path) -> dict[str, dict]:
    """Every parameter's layout in a MindSpore strategy checkpoint (device matrix, tensor map, optimizer shard); a
    missing or unreadable file is a one-line error."""
    from mindspore.parallel import build_searched_strategy

    path = input_file(path, what="strategy checkpoint")
    try:
        with _quiet_logs():
            layouts = build_searched_strategy(str(path))
    except Exception as err:  # noqa: BLE001 - MindSpore raises several types for a bad file
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{path}: not a MindSpore strategy checkpoint ({reason})") from None
    if not layouts:  # protobuf reads many a file as an empty strategy
        raise UserInputError(f"{path}: not a MindSpore strategy checkpoint (it lays out no parameter)")
    return {name: {"dev_matrix": list(v.dev_matrix[0].dim), "tensor_map": list(v.tensor_map[0].dim),
                   "field": v.field, "opt_weight_shard_step": v.opt_weight_shard_step,
                   "opt_weight_shard_size": v.opt_weight_shard_size}
            for name, v in sorted(layouts.items())}


def strategy_digest(path: str | Path) -> str:
    """SHA-256 of a strategy checkpoint's layouts (not of its bytes, which each rank writes on its own): two jobs
    whose parameters are laid out alike have the same digest."""
    return hashlib.sha256(json.dumps(strategy_layouts(path), sort_keys=True).encode()).hexdigest()


def rank_dir(output_dir: str | Path, rank: int) -> Path:
    """Where rank `rank` of a multi-process run writes its metrics and checkpoints."""
    return Path(output_dir) / f"rank_{rank}"


def is_model_parameter(name: str) -> bool:
    return name.startswith(MODEL_PREFIX)


def restore(cell: nn.Cell, params: dict, path: Path, model_only: bool = False) -> None:
    """Load parameters into `cell`: every parameter of the cell must be in the checkpoint with the same shape, and
    every checkpoint parameter must have a place in the cell (with `model_only`, every model parameter: optimizer
    state is then ignored, as for evaluation or --init-from)."""
    own = {p.name: p for p in cell.get_parameters() if p.name not in DERIVED}
    missing = [name for name in own if name not in params]
    if missing:
        raise UserInputError(f"{path}: checkpoint lacks {len(missing)} parameters of this model, "
                             f"for example {missing[0]}; was it saved with another config?")
    unused = [name for name in params if name not in own and name not in DERIVED
              and (is_model_parameter(name) or not model_only)]
    if unused:
        raise UserInputError(f"{path}: {len(unused)} checkpoint parameters have no place in this model, for example "
                             f"{unused[0]}; was it saved with another config?")
    for name, param in own.items():
        if tuple(params[name].shape) != tuple(param.shape):
            raise UserInputError(f"{path}: parameter {name} has shape {tuple(params[name].shape)}, "
                                 f"the model expects {tuple(param.shape)}")
    ms.load_param_into_net(cell, {name: params[name] for name in own}, strict_load=True)


def config_of(meta: dict) -> dict:
    return json.loads(meta["config_json"]) if "config_json" in meta else {}


def _value(raw: dict, key: str):
    section, name = key.split(".")
    return raw.get(section, {}).get(name)


def model_differences(meta: dict, cfg) -> list[str]:
    """'key: saved VALUE, now VALUE' for every model-defining key whose value differs from the checkpoint's."""
    saved, now = config_of(meta), cfg.to_dict()
    if not saved:
        return []
    keys = MODEL_KEYS + (VOCABULARY_KEYS if now["data"]["vocab_limit"] or _value(saved, "data.vocab_limit") else ())
    return [f"{key}: saved {_value(saved, key)!r}, now {_value(now, key)!r}" for key in keys
            if _value(saved, key) != _value(now, key)]


def check_same_model(path: Path, meta: dict, cfg) -> None:
    """Refuse a checkpoint of another model (resume and eval load weights only into the model they came from)."""
    differences = model_differences(meta, cfg)
    if differences:
        raise UserInputError(f"{path}: saved for another model ({'; '.join(differences)}); pass the config it was "
                             f"trained with, or convert it with tools/convert_ckpt.py (upcycle, reroute)")
