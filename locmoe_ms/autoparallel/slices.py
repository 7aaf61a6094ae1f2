"""What one device holds of each parameter in auto mode: the op table's split (`parameter_layout`), then, with
parallel_config.optimizer_shard, MindSpore's parallel optimizer's.

The parallel optimizer (MindSpore 2.10, `enable_parallel_optimizer`) stores a parameter, and the optimizer moments
cloned from it, split over the r devices that hold the same slice (the mesh axes its layout leaves unused) when the
full tensor has at least PARALLEL_OPTIMIZER_THRESHOLD_KB and dimension 0 of the slice is divisible by r; otherwise
it stays whole on each of them. It gathers the weight (AllGather over those r devices) before its first use and
reduce-scatters its gradient. autoparallel/context.py sets the threshold to this value, so the rule below and the
compile agree by construction; the dry-run tests compare them with the compiled parameter_layout_dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from locmoe_ms.autoparallel.mesh import MESH_AXES, ParallelSizes
from locmoe_ms.autoparallel.table import parameter_layout

PARALLEL_OPTIMIZER_THRESHOLD_KB = 64  # MindSpore's default, set explicitly


@dataclass(frozen=True)
class ParameterSlice:
    name: str
    full: tuple[int, ...]
    model_slice: tuple[int, ...]   # after expert / model parallel: parameter_layout_dict's slice shape
    stored: tuple[int, ...]        # what the device stores: the model slice, split again by the optimizer shard
    split: str                     # "E/ep f/mp", "whole", with " opt/N" for an optimizer shard over N devices
    replica_axes: tuple[str, ...]  # mesh axes (of size > 1) along which devices hold the same slice
    opt_group: int                 # devices of the optimizer shard (1: not sharded; else the replicas')

    @property
    def opt_axes(self) -> tuple[str, ...]:
        """Mesh axes of the optimizer shard group (() when not sharded)."""
        return self.replica_axes if self.opt_group > 1 else ()


def optimizer_group(full: tuple[int, ...], model_slice: tuple[int, ...], repeated: int, itemsize: int = 4) -> int:
    """Devices the parallel optimizer spreads a parameter over (1: not sharded)."""
    if repeated <= 1 or not model_slice or prod(full) * itemsize < PARALLEL_OPTIMIZER_THRESHOLD_KB * 1024:
        return 1
    return repeated if model_slice[0] % repeated == 0 else 1


def parameter_slice(name: str, full: tuple[int, ...], sizes: ParallelSizes, optimizer_shard: bool) -> ParameterSlice:
    """One parameter (or an optimizer moment, by its parameter's name) as a device of the mesh holds it; a
    parameter the op table does not name (bias balancing's balance_bias) is replicated."""
    layout = parameter_layout(name) or tuple((str(n), ()) for n in full)
    cut = [sizes.split(axes) for _, axes in layout]
    model_slice = tuple(n // c for n, c in zip(full, cut))
    used = {a for _, axes in layout for a in axes}
    free = tuple(a for a in MESH_AXES if a not in used and sizes.axis(a) > 1)
    group = optimizer_group(full, model_slice, prod(sizes.axis(a) for a in free)) if optimizer_shard else 1
    stored = (model_slice[0] // group, *model_slice[1:]) if group > 1 else model_slice
    split = " ".join(f"{sym}/{'+'.join(axes)}" for sym, axes in layout if axes and sizes.split(axes) > 1) or "whole"
    return ParameterSlice(name, full, model_slice, stored, split + (f" opt/{group}" if group > 1 else ""), free,
                          group)


def optimizer_group_ranks(piece: ParameterSlice, sizes: ParallelSizes, rank: int) -> tuple[int, ...]:
    """The ranks `rank` shares its optimizer shard of `piece` with: those of the mesh that differ from it only on
    the shard's axes (() when the parameter is not sharded)."""
    if piece.opt_group == 1:
        return ()
    mine = sizes.coordinates(rank)
    return tuple(r for r in range(sizes.devices)
                 if all(c == mine[a] for a, c in sizes.coordinates(r).items() if a not in piece.opt_axes))
