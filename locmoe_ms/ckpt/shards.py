"""Per-rank shards of an expert/tensor-parallel run <-> one full single-process checkpoint.

Rank r of a world of W holds expert block k = topology.expert_block(r) (experts [k*E/ep, (k+1)*E/ep)) and
tensor-parallel index t = r % model_parallel; parallel/layout.py says which axis of each parameter is split
(optimizer moments follow their parameter). Tensors split along the model axis may also be held whole (what a
rank of the CPU communicator holds); merge tells the two apart by shape. Ranks holding the same block are replicas
and must be bit-identical. Shards live in OUTPUT_DIR/rank_{r}/checkpoints/step_XXXXXXXX.ckpt, where
`locmoe-train --output-dir OUTPUT_DIR --resume` looks for them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from locmoe_ms.ckpt import io
from locmoe_ms.ckpt.fresh import parameter_shapes
from locmoe_ms.ckpt.paths import refuse_overwrite
from locmoe_ms.config import Config, config_from_dict
from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.layout import ParamSplit, expert_shard, parameter_split
from locmoe_ms.parallel.topology import Topology
from locmoe_ms.train import checkpoint

Shard = tuple[Path, io.Params, dict]  # (file, params, meta)


def rank_checkpoint_dir(output_dir: str | Path, rank: int) -> Path:
    return checkpoint.rank_dir(output_dir, rank) / "checkpoints"


def tensor_rank(topology: Topology, rank: int) -> int:
    """Index inside the tensor-parallel group (model_parallel consecutive ranks)."""
    return rank % topology.model_parallel


def _model_name(name: str) -> str:
    """The model parameter an entry belongs to (an optimizer moment's parameter, or the name itself)."""
    return name[name.find(io.MODEL_PREFIX):] if io.MODEL_PREFIX in name else name


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---- slicing one tensor ----
def take(name: str, array: np.ndarray, block: int, blocks: int, t: int, tp: int) -> np.ndarray:
    """Expert block `block` of `blocks` and tensor slice `t` of `tp` of a full tensor."""
    array = expert_shard(name, array, block, blocks)
    axis = parameter_split(name).model_axis
    if axis is not None and tp > 1:
        array = np.split(array, tp, axis=axis)[t]
    return io.contiguous(array)


def _join_tensor_slices(pieces: list[np.ndarray], split: ParamSplit) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=split.model_axis)


def _shard_shape(full: tuple[int, ...], split: ParamSplit, blocks: int, tp: int) -> tuple[int, ...]:
    shape = list(full)
    if split.expert_axis is not None:
        shape[split.expert_axis] //= blocks
    if split.model_axis is not None:
        shape[split.model_axis] //= tp
    return tuple(shape)


# ---- merge ----
def shard_files(inputs: list[str], step: int | None) -> list[Path]:
    """A rank directory (rank_r/ with checkpoints/, or the checkpoints/ directory) -> its newest checkpoint or
    step_N; a file stays as it is."""
    files = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        if step is not None:
            target = checkpoint.checkpoint_path(directory, step)
            if not target.is_file():
                raise UserInputError(f"{path}: no {target.name} in {directory}")
        else:
            found = checkpoint.list_checkpoints(directory)
            if not found:
                raise UserInputError(f"{path}: no step_XXXXXXXX.ckpt in {directory}")
            target = found[-1]
        files.append(target)
    return files


def check_world(shards: list[Shard], step: int | None, keys: tuple[str, ...] = io.WORLD_KEYS) -> dict[int, Shard]:
    """Every input a shard of one run at one step (each recording `keys`), each rank of the world exactly once."""
    for path, _, meta in shards:
        if any(key not in meta for key in keys):
            raise UserInputError(f"{path}: not a per-rank shard (no rank metadata); it is a full checkpoint already")
    first_path, _, first = shards[0]
    by_rank: dict[int, Shard] = {}
    for shard in shards:
        path, _, meta = shard
        if step is not None and meta["step"] != step:
            raise UserInputError(f"{path}: is step {meta['step']}, not --step {step}")
        if meta["step"] != first["step"]:
            raise UserInputError(f"shards from different steps: {first_path} is step {first['step']}, {path} is step "
                                 f"{meta['step']}; pass --step N to pick one step in every rank directory")
        if meta["world_size"] != first["world_size"]:
            raise UserInputError(f"{path}: world_size {meta['world_size']}, but {first_path} has "
                                 f"{first['world_size']}: shards of different runs")
        if meta.get("config_json") != first.get("config_json"):
            raise UserInputError(f"{path}: its recorded config differs from {first_path}'s: shards of different runs")
        rank = meta["rank"]
        if rank in by_rank:
            raise UserInputError(f"rank {rank} given twice: {by_rank[rank][0]} and {path}")
        if not 0 <= rank < meta["world_size"]:
            raise UserInputError(f"{path}: rank {rank} outside world_size {meta['world_size']}")
        by_rank[rank] = shard
    missing = [r for r in range(first["world_size"]) if r not in by_rank]
    if missing:
        raise UserInputError(f"rank {', '.join(map(str, missing))} of world_size {first['world_size']} missing "
                             f"(given: {', '.join(map(str, sorted(by_rank)))})")
    return by_rank


def _merge_entry(name: str, by_rank: dict[int, Shard], topo: Topology, full: tuple[int, ...] | None) -> np.ndarray:
    split = parameter_split(name)
    blocks = topo.expert_parallel if split.expert_axis is not None else 1
    rank0 = by_rank[0][1][name]
    sliced = (split.model_axis is not None and topo.model_parallel > 1 and full is not None
              and rank0.ndim == len(full) and rank0.shape[split.model_axis] != full[split.model_axis])
    tp = topo.model_parallel if sliced else 1
    expected = _shard_shape(full, split, blocks, tp) if full is not None else rank0.shape
    held: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
    for rank, (path, params, _) in sorted(by_rank.items()):
        array = params[name]
        if array.shape != expected:
            raise UserInputError(f"{path}: {name} has shape {array.shape}, expected {expected} (rank {rank} of "
                                 f"expert_parallel {topo.expert_parallel}, model_parallel {topo.model_parallel})")
        key = (topo.expert_block(rank) if blocks > 1 else 0, tensor_rank(topo, rank) if sliced else 0)
        if key not in held:
            held[key] = (rank, array)
        elif not _identical(held[key][1], array):
            raise UserInputError(f"ranks {held[key][0]} and {rank} hold different values of {name}; replicas of a "
                                 f"block must be bit-identical")
    rows = [_join_tensor_slices([held[(k, t)][1] for t in range(tp)], split) for k in range(blocks)]
    return rows[0] if blocks == 1 else np.concatenate(rows, axis=split.expert_axis)


def merge(files: list[Path], step: int | None = None) -> tuple[io.Params, dict]:
    """Per-rank shards -> (full params, metadata without the world keys); config_json kept as the run's."""
    shards = [(path, *io.read(path)) for path in files]
    by_rank = check_world(shards, step)
    path0, params0, meta0 = by_rank[0]
    cfg = io.config_of(path0, meta0)
    topo = Topology.from_config(cfg)
    if topo.world != meta0["world_size"]:
        raise UserInputError(f"{path0}: world_size {meta0['world_size']}, but its config's parallel_config describes "
                             f"{topo.world} devices")
    for rank, (path, params, meta) in by_rank.items():
        if (meta["expert_parallel_rank"], meta["model_parallel_rank"]) != (topo.expert_block(rank),
                                                                           tensor_rank(topo, rank)):
            raise UserInputError(f"{path}: rank {rank} records expert_parallel_rank {meta['expert_parallel_rank']}, "
                                 f"model_parallel_rank {meta['model_parallel_rank']}; its config places it at "
                                 f"{topo.expert_block(rank)}, {tensor_rank(topo, rank)}")
        if set(params) != set(params0):
            odd = sorted(set(params) ^ set(params0))[0]
            raise UserInputError(f"{path}: parameter {odd} is in one of rank {rank} and rank 0 only")
    shapes = parameter_shapes(cfg)
    merged = {name: _merge_entry(name, by_rank, topo, shapes.get(_model_name(name))) for name in params0}
    return merged, {k: v for k, v in meta0.items() if k not in io.WORLD_KEYS}


# ---- split ----
def shard_config(cfg: Config, expert_parallel: int, model_parallel: int, world: int) -> Config:
    """cfg with parallel_config describing `world` ranks: expert_parallel K, model_parallel T, data_parallel W/T."""
    raw = cfg.to_dict()
    par = raw["parallel_config"]
    per_node = par["devices_per_node"]
    if world % per_node or per_node % model_parallel:
        per_node = world
    par.update(expert_parallel=expert_parallel, model_parallel=model_parallel, data_parallel=world // model_parallel,
               nodes=world // per_node, devices_per_node=per_node)
    try:
        new = config_from_dict(raw)
        Topology.from_config(new)
    except UserInputError as err:
        raise UserInputError(f"the config for {world} ranks is invalid: {err}") from None
    return new


def _check_split(cfg: Config, expert_parallel: int, model_parallel: int, world: int, whole: bool) -> None:
    m, experts = cfg.model, cfg.moe_config.expert_num
    for flag, count in (("--expert-parallel", expert_parallel), ("--model-parallel", model_parallel),
                        ("--world", world)):
        if count < 1:
            raise UserInputError(f"{flag} {count}: must be >= 1")
    if experts % expert_parallel:
        raise UserInputError(f"--expert-parallel {expert_parallel}: must divide moe_config.expert_num ({experts})")
    if not whole and (m.num_heads % model_parallel or m.ffn_hidden_size % model_parallel
                      or m.hidden_size % model_parallel or m.vocab_size % model_parallel):
        raise UserInputError(f"--model-parallel {model_parallel}: must divide model.num_heads ({m.num_heads}), "
                             f"model.ffn_hidden_size ({m.ffn_hidden_size}), model.hidden_size ({m.hidden_size}) and "
                             f"model.vocab_size ({m.vocab_size}: the vocabulary is sliced as auto mode splits it), "
                             f"or pass --whole-tensors")
    if world % (expert_parallel * model_parallel):
        raise UserInputError(f"--world {world}: must be a multiple of expert_parallel * model_parallel "
                             f"({expert_parallel * model_parallel})")


def _check_full(path: Path, params: io.Params, meta: dict, cfg: Config) -> None:
    if "rank" in meta:
        raise UserInputError(f"{path}: is a per-rank shard (rank {meta['rank']} of {meta.get('world_size')}); "
                             f"merge the shards first")
    for name, full in parameter_shapes(cfg).items():
        if name in params and tuple(params[name].shape) != full:
            raise UserInputError(f"{path}: {name} has shape {tuple(params[name].shape)}, its config builds {full}")


def split(path: Path, output_dir: Path, expert_parallel: int, model_parallel: int = 1, world: int | None = None,
          whole: bool = False) -> list[Path]:
    """Write one shard per rank; `whole` keeps tensors whole along the model axis (CPU ranks hold them so)."""
    params, meta = io.read(path)
    cfg = io.config_of(path, meta)
    world = expert_parallel * model_parallel if world is None else world
    _check_split(cfg, expert_parallel, model_parallel, world, whole)
    _check_full(path, params, meta, cfg)
    new = shard_config(cfg, expert_parallel, model_parallel, world)
    topo = Topology.from_config(new)
    targets = [checkpoint.checkpoint_path(rank_checkpoint_dir(output_dir, r), int(meta["step"])) for r in range(world)]
    for r in range(world):
        refuse_overwrite(targets[r], [path])
        if checkpoint.list_checkpoints(targets[r].parent):
            raise UserInputError(f"--output {output_dir}: {targets[r].parent} holds checkpoints already; "
                                 f"--resume would mix them with the new shards; choose another directory")
    shard_meta = {**meta, "config_json": io.config_json(new), "world_size": world}
    tp = 1 if whole else model_parallel
    for r, target in enumerate(targets):
        block, t = topo.expert_block(r), tensor_rank(topo, r)
        shard = {name: take(name, array, block, expert_parallel, t % tp, tp) for name, array in params.items()}
        io.write(target, shard, {**shard_meta, "rank": r, "expert_parallel_rank": block, "model_parallel_rank": t})
    return targets
