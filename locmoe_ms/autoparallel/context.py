"""MindSpore's auto-parallel context for auto mode (Ascend only): HCCL, the parallel mode, full batch and where the
strategy checkpoint goes.

NOT RUN ON ASCEND HARDWARE. Compiled for virtual clusters of 8 to 256 devices by tools/ascend_dryrun.py (stand-in
CANN libraries, MS_SIMULATION_LEVEL=0). MindSpore 2.10 has no semi_auto_parallel on CPU; there the same model runs
with the explicit exchange (parallel/exchange.py) under msrun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from locmoe_ms.autoparallel.checks import validate
from locmoe_ms.autoparallel.mesh import ParallelSizes
from locmoe_ms.autoparallel.slices import PARALLEL_OPTIMIZER_THRESHOLD_KB
from locmoe_ms.errors import UserInputError


def set_parallel_context(cfg, parallel_mode: str = "auto_parallel") -> ParallelSizes:
    """Initialise HCCL and MindSpore's auto-parallel context for cfg's parallel_config (Ascend only).

    "auto_parallel" uses sharding propagation from the layouts apply_shard_strategies sets; "semi_auto_parallel"
    needs a strategy on every op, which only cells owning their primitives can give. The graph takes the global
    batch on every rank (full_batch): the model's token groups, capacity and offsets are built for the global
    batch, which a per-rank dataset strategy would rescale. parallel_config.optimizer_shard turns on MindSpore's
    parallel optimizer (autoparallel/slices.py says what it splits)."""
    par = cfg.parallel_config
    if par.communicator != "hccl":
        raise UserInputError(f"parallel_config.communicator = {par.communicator!r}: auto-parallel needs 'hccl' "
                             f"(Ascend); with 'local' or 'cpu' the explicit exchange is used")
    if parallel_mode not in ("auto_parallel", "semi_auto_parallel"):
        raise UserInputError(f"parallel_mode = {parallel_mode!r}: must be auto_parallel or semi_auto_parallel")
    sizes = ParallelSizes.from_config(cfg)
    validate(sizes, cfg.virtual_devices, cfg)
    import mindspore as ms
    from mindspore.communication import get_group_size, init

    require_ascend(ms)
    init()
    world = get_group_size()
    if world != sizes.devices:
        raise UserInputError(f"parallel_config.nodes = {par.nodes}: nodes * devices_per_node ({cfg.virtual_devices}) "
                             f"must equal the launched ranks ({world})")
    extra = {"search_mode": "sharding_propagation"} if parallel_mode == "auto_parallel" else {}
    ms.set_auto_parallel_context(parallel_mode=parallel_mode, device_num=world, gradients_mean=True,
                                 enable_alltoall=True, full_batch=True, **extra)
    if par.optimizer_shard:  # the rule of autoparallel/slices.py, with its threshold set rather than defaulted
        ms.set_auto_parallel_context(enable_parallel_optimizer=True, parallel_optimizer_config={
            "parallel_optimizer_threshold": PARALLEL_OPTIMIZER_THRESHOLD_KB})
    return sizes


def save_strategy(path: Path) -> None:
    """MindSpore writes the strategy checkpoint to `path` when the graph compiles: every parameter's and optimizer
    moment's layout, the parallel optimizer's split included, which its checkpoint transforms read."""
    import mindspore as ms

    path.parent.mkdir(parents=True, exist_ok=True)
    ms.set_auto_parallel_context(strategy_ckpt_config={"save_file": str(path), "only_trainable_params": False})


def require_ascend(ms: Any) -> None:
    target = ms.get_context("device_target")
    if target != "Ascend":
        raise UserInputError(f"device_target = {target!r}: shard strategies apply on Ascend only; on CPU the "
                             f"explicit exchange (parallel_config.communicator local or cpu) is used")
