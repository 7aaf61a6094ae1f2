"""The op table (autoparallel/table.py) in MindSpore's terms: numeric in-strategies for `Primitive.shard` and
`mindspore.parallel.Layout`s of the ("edp", "ep", "mp") mesh, which also pin the rank order (needed for the expert
ops when dp/ep > 1 and ep > 1). MindSpore itself is imported only by `mindspore_layouts`.
"""
from __future__ import annotations

from typing import Any

from locmoe_ms.autoparallel.mesh import MESH_AXES, ParallelSizes, TensorLayout
from locmoe_ms.autoparallel.table import OPS


def in_strategies(sizes: ParallelSizes) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Op -> the `in_strategy` of Primitive.shard (splits per input dimension). As tuples, MindSpore orders the
    device matrix by dimension, so for the expert ops (E:ep before GC:edp) they put ep outermost: when both
    dp/ep > 1 and ep > 1 only `mindspore_layouts` keeps Topology's placement."""
    return {key: tuple(splits(sizes, t) for t in spec.inputs) for key, spec in OPS.items()}


def output_strategies(sizes: ParallelSizes) -> dict[str, tuple[int, ...]]:
    """Op -> splits of its output. No op needs MindSpore's out_strategy: row-parallel outputs use the default
    AllReduce; these are for checks and documentation."""
    return {key: splits(sizes, spec.output) for key, spec in OPS.items()}


def splits(sizes: ParallelSizes, layout: TensorLayout) -> tuple[int, ...]:
    return tuple(sizes.split(axes) for _, axes in layout)


def mindspore_layouts(sizes: ParallelSizes, key: str, output: bool = False) -> tuple[Any, ...]:
    """Op -> tuple of mindspore.parallel.Layout (one per input, or the output's): the same splits as
    `in_strategies` with the device order pinned to Topology's numbering."""
    from mindspore.parallel import Layout

    mesh = Layout(tuple(sizes.axis(a) for a in MESH_AXES), MESH_AXES)
    spec = OPS[key]
    return tuple(layout_of(mesh, t) for t in ((spec.output,) if output else spec.inputs))


def layout_of(mesh: Any, layout: TensorLayout) -> Any:
    """A TensorLayout as a MindSpore Layout of `mesh`."""
    return mesh(*[("None" if not axes else axes[0] if len(axes) == 1 else axes) for _, axes in layout])


def strategy_table(sizes: ParallelSizes, keys: tuple[str, ...] | None = None) -> str:
    """Human-readable table of op -> in_strategy -> output splits."""
    ins, outs = in_strategies(sizes), output_strategies(sizes)
    keys = keys or tuple(OPS)
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {OPS[k].primitive:<15} {ins[k]} -> {outs[k]}" for k in keys)
