"""Auto-mode checkpoints: a job's per-rank slices <-> one full checkpoint, and slices -> another job's strategy.

Rank r of an auto-parallel job saves its own slices (train/checkpoint.py, `integrated_save=False`) into
OUTPUT/rank_r/checkpoints/, beside the strategy checkpoint MindSpore wrote when the graph compiled
(OUTPUT/rank_r/strategy.ckpt: every parameter's and moment's layout, the parallel optimizer's split included).
Every conversion here is MindSpore's own strategy-based transform, `transform_checkpoints` (a source strategy of
None is a full checkpoint, a destination of None makes one). It reads each source rank's file once for all the
destination ranks that need the same source ranks (`rank_list_for_transform`) and holds those slices in host
memory meanwhile: for a merge, or a reshard from a job whose parallel optimizer split a whole tensor over every
rank, that is the whole state. (`transform_checkpoint_by_rank`, one destination rank at a time, holds less but
reads the sources again for every rank: 64 -> 128 devices took minutes for a 340 MB model.) The transforms read
plain parameter files, so each input's metadata (step, config, data position) is set aside and written back onto
every output.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from math import prod
from pathlib import Path

import mindspore as ms

from locmoe_ms.ckpt import io
from locmoe_ms.ckpt.fresh import parameter_shapes
from locmoe_ms.ckpt.shards import check_world, rank_checkpoint_dir
from locmoe_ms.errors import UserInputError
from locmoe_ms.train import checkpoint

SLICE_KEYS = ("rank", "world_size", "mode", "strategy_digest")  # what an auto-mode slice records of its job
Slices = dict[int, tuple[Path, dict]]  # rank -> (file, metadata)


def is_auto_slice(meta: dict) -> bool:
    return meta.get("mode") == "auto"


def strategy_world(path: Path) -> int:
    """Devices a strategy checkpoint lays the parameters over (its device matrix)."""
    layouts = checkpoint.strategy_layouts(path)
    return prod(next(iter(layouts.values()))["dev_matrix"])


def rank_strategy(slice_file: Path) -> Path:
    """The strategy checkpoint beside a rank's checkpoints (rank_r/strategy.ckpt)."""
    return slice_file.parent.parent / checkpoint.STRATEGY_FILE


def read_slices(files: list[Path], step: int | None) -> Slices:
    """Metadata of a job's slice files, checked: one job at one step (same world, strategy and config), every
    rank once."""
    shards = []
    for path in files:
        meta = checkpoint.load(path)[1]
        if not is_auto_slice(meta):
            raise UserInputError(f"{path}: not an auto-mode slice (no mode 'auto' recorded)")
        shards.append((path, {}, meta))
    by_rank = check_world(shards, step, SLICE_KEYS)
    first_path, _, first = by_rank[0]
    for path, _, meta in by_rank.values():
        if meta["strategy_digest"] != first["strategy_digest"]:
            raise UserInputError(f"{path}: saved under strategy {meta['strategy_digest'][:12]}, {first_path} under "
                                 f"{first['strategy_digest'][:12]}: slices of different jobs")
    return {rank: (path, meta) for rank, (path, _, meta) in by_rank.items()}


def job_strategy(slices: Slices, strategy: Path | None) -> Path:
    """The strategy the slices were saved under: `strategy`, or rank 0's strategy.ckpt; its layouts must be the
    ones the slices record."""
    path0, meta0 = slices[0]
    strategy = Path(strategy) if strategy is not None else rank_strategy(path0)
    digest = checkpoint.strategy_digest(strategy)
    if digest != meta0["strategy_digest"]:
        raise UserInputError(f"{strategy}: strategy {digest[:12]}, but the slices were saved under "
                             f"{meta0['strategy_digest'][:12]} ({path0}); pass the job's own strategy file")
    if strategy_world(strategy) != meta0["world_size"]:
        raise UserInputError(f"{strategy}: lays parameters over {strategy_world(strategy)} devices, the slices "
                             f"record world_size {meta0['world_size']}")
    return strategy


def check_strategy_fits(strategy: Path, shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    """A destination strategy must be one of this model: the same model parameters (a checkpoint without
    optimizer moments is a model-only one), every entry of the checkpoint laid out, each split axis divisible."""
    layouts = checkpoint.strategy_layouts(strategy)
    missing = sorted(n for n in set(layouts) - set(shapes) if io.is_model_parameter(n))
    if missing:
        raise UserInputError(f"{strategy}: lays out {len(missing)} parameters {source} lacks, for example "
                             f"{missing[0]}: a strategy of another model")
    unplaced = sorted(n for n in shapes if n not in layouts and n not in checkpoint.DERIVED and n != "global_step")
    if unplaced:
        raise UserInputError(f"{strategy}: has no layout for {len(unplaced)} parameters of {source}, for example "
                             f"{unplaced[0]}: a strategy of another model")
    for name, layout in layouts.items():
        if name not in shapes:
            continue
        matrix, shape = layout["dev_matrix"], shapes[name]
        for axis, dim in enumerate(layout["tensor_map"]):
            parts = matrix[len(matrix) - 1 - dim] if dim >= 0 else 1
            if axis >= len(shape) or shape[axis] % parts:
                raise UserInputError(f"{strategy}: splits {name} axis {axis} in {parts}, but {source} holds it at "
                                     f"shape {tuple(shape)}: a strategy of another model")


@contextmanager
def _workspace(near: Path):
    """A temporary directory inside `near` (the output's filesystem), removed afterwards whatever happens, and
    `near` with it if this made it and nothing else landed there."""
    made = not near.exists()
    near.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".convert_", dir=near))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if made and not any(near.iterdir()):
            near.rmdir()


def _plain_copy(source: Path, target: Path) -> dict[str, tuple[int, ...]]:
    """`source` without its metadata (what MindSpore's transforms read); returns its parameter shapes."""
    params, _ = checkpoint.load(source)
    shapes = {name: tuple(value.shape) for name, value in params.items()}
    ms.save_checkpoint([{"name": name, "data": value} for name, value in params.items()], str(target))
    return shapes


def _transform(work: Path, src: Path | None, dst: Path | None) -> dict[int, Path]:
    """MindSpore's transform of the plain files work/source/rank_r/ into work/target/rank_r/ (destination rank ->
    file); its failures become one line."""
    try:
        ms.parallel.transform_checkpoints(str(work / "source"), str(work / "target"), "slice",
                                          str(src) if src else None, str(dst) if dst else None)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, NotADirectoryError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserInputError(f"MindSpore's transform_checkpoints failed: {reason}") from None
    return {int(d.name[len("rank_"):]): next(d.glob("*.ckpt")) for d in (work / "target").glob("rank_*")}


def _source(work: Path, rank: int) -> Path:
    """Where the plain copy of source rank `rank` goes (the layout transform_checkpoints reads)."""
    (work / "source" / f"rank_{rank}").mkdir(parents=True, exist_ok=True)
    return work / "source" / f"rank_{rank}" / "slice.ckpt"


def _write(plain: Path, target: Path, meta: dict) -> Path:
    """A transformed plain file with `meta` attached, written atomically to `target`."""
    params = ms.load_checkpoint(str(plain))
    return checkpoint.atomic_save([{"name": n, "data": v} for n, v in params.items()], target,
                                  {k: v for k, v in meta.items() if v is not None})


def _job_meta(meta: dict) -> dict:
    """What every output keeps of an input's metadata: the step, config, data position (not the slice keys)."""
    return {k: v for k, v in meta.items() if k not in SLICE_KEYS and k not in io.WORLD_KEYS}


def _slice_targets(output_dir: Path, world: int, step: int, inputs: list[Path]) -> list[Path]:
    targets = [checkpoint.checkpoint_path(rank_checkpoint_dir(output_dir, r), step) for r in range(world)]
    for target in targets:
        io.refuse_overwrite(target, inputs)
        if checkpoint.list_checkpoints(target.parent):
            raise UserInputError(f"--output {output_dir}: {target.parent} holds checkpoints already; --resume "
                                 f"would mix them with the new slices; choose another directory")
    return targets


def _write_slices(plain: dict[int, Path], output_dir: Path, targets: list[Path], strategy: Path, meta: dict) -> None:
    """The transformed plain files as the job's slices, each with its metadata and the strategy beside it."""
    digest = checkpoint.strategy_digest(strategy)
    for rank, target in enumerate(targets):
        _write(plain[rank], target,
               {**meta, "rank": rank, "world_size": len(targets), "mode": "auto", "strategy_digest": digest})
        shutil.copyfile(strategy, checkpoint.rank_dir(output_dir, rank) / checkpoint.STRATEGY_FILE)


def merge(files: list[Path], output: Path, step: int | None = None, strategy: Path | None = None) -> dict:
    """A job's slices -> one full checkpoint at `output`; returns the metadata written."""
    slices = read_slices(files, step)
    strategy = job_strategy(slices, strategy)
    meta = _job_meta(slices[0][1])
    with _workspace(output.absolute().parent) as work:
        for rank, (path, _) in slices.items():
            _plain_copy(path, _source(work, rank))
        _write(_transform(work, strategy, None)[0], output, meta)
    return meta


def split(full: Path, strategy: Path, output_dir: Path) -> list[Path]:
    """A full checkpoint -> the slices of every rank of the job `strategy` describes (OUTPUT/rank_r/)."""
    params, meta = checkpoint.load(full)
    if "rank" in meta:
        raise UserInputError(f"{full}: is a per-rank checkpoint (rank {meta['rank']} of {meta.get('world_size')}); "
                             f"merge it first")
    check_strategy_fits(strategy, {n: tuple(v.shape) for n, v in params.items()}, full)
    del params
    targets = _slice_targets(output_dir, strategy_world(strategy), int(meta["step"]), [full])
    with _workspace(output_dir) as work:
        _plain_copy(full, _source(work, 0))
        _write_slices(_transform(work, None, strategy), output_dir, targets, strategy, _job_meta(meta))
    return targets


def reshard(files: list[Path], strategy: Path, output_dir: Path, step: int | None = None,
            source_strategy: Path | None = None) -> list[Path]:
    """A job's slices -> the slices of every rank of the job `strategy` describes (e.g. 64 -> 128 devices)."""
    slices = read_slices(files, step)
    source_strategy = job_strategy(slices, source_strategy)
    meta = slices[0][1]
    _config_shapes(slices[0][0], meta, set())  # the recorded config must be valid before anything is written
    targets = _slice_targets(output_dir, strategy_world(strategy), int(meta["step"]), list(files))
    with _workspace(output_dir) as work:
        names = set()
        for rank, (path, _) in slices.items():
            names = set(_plain_copy(path, _source(work, rank)))
        check_strategy_fits(strategy, _config_shapes(slices[0][0], meta, names), slices[0][0])
        _write_slices(_transform(work, source_strategy, strategy), output_dir, targets, strategy, _job_meta(meta))
    return targets


def _config_shapes(path: Path, meta: dict, names: set[str]) -> dict[str, tuple[int, ...]]:
    """Full shapes of `names` (model parameters and their moments) by the config a checkpoint records."""
    shapes = parameter_shapes(io.config_of(path, meta))
    full = {}
    for name in names:
        model = name[name.find(io.MODEL_PREFIX):] if io.MODEL_PREFIX in name else name
        if model in shapes:
            full[name] = shapes[model]
    return full
