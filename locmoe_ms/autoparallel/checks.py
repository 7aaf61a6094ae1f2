"""Checks of the op table before anything compiles: the sizes a config gives the table's symbols, the config rules
in auto mode (`validate`), layout agreement along the data flow (`check_strategies`), the placement against
Topology's (`check_topology`) and parameter layouts against parallel/layout.py's splits (`parameter_mismatches`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from math import prod

from locmoe_ms.autoparallel.layouts import splits
from locmoe_ms.autoparallel.mesh import ALIASES, ParallelSizes, TensorLayout, show
from locmoe_ms.autoparallel.table import DATA_FLOW, OPS, OpSpec, parameter_layout
from locmoe_ms.capacity import group_capacity
from locmoe_ms.config import check_parallel_sizes
from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.layout import ParamSplit, parameter_split


def parameter_split_of(layout: TensorLayout) -> ParamSplit:
    """The ParamSplit (layout.py's vocabulary) a strategy layout gives a parameter."""
    expert = [i for i, (_, axes) in enumerate(layout) if "ep" in axes]
    model = [i for i, (_, axes) in enumerate(layout) if "mp" in axes]
    return ParamSplit(expert_axis=expert[0] if expert else None, model_axis=model[0] if model else None)


def parameter_mismatches(names) -> list[str]:
    """Parameters whose strategy layout disagrees with layout.parameter_split (the checkpoint tools' view)."""
    problems = []
    for name in names:
        layout = parameter_layout(name)
        if layout is None:
            problems.append(f"{name}: no strategy names this parameter")
            continue
        mine, theirs = parameter_split_of(layout), parameter_split(name)
        if mine != theirs:
            problems.append(f"{name}: the strategies give {mine}, layout.py says {theirs}")
    return problems


def tensor_sizes(cfg, sizes: ParallelSizes) -> dict[str, int]:
    """Size of every dimension symbol of OPS for a config (capacity as MoELayer computes it)."""
    m, moe = cfg.model, cfg.moe_config
    batch, tokens = cfg.micro_batch_size, cfg.micro_batch_size * m.seq_length  # what one call of the model takes
    per_group = tokens // sizes.dp
    capacity = group_capacity(per_group, moe, sizes.ep)
    return {"B": batch, "S": m.seq_length, "h": m.hidden_size, "H": m.num_heads,
            "D": m.hidden_size // m.num_heads, "f": m.ffn_hidden_size, "V": m.vocab_size, "T": tokens,
            "E": moe.expert_num, "G": sizes.dp, "t": per_group, "C": capacity, "GC": sizes.dp * capacity,
            "EC": moe.expert_num * capacity, "one": 1}


def validate(sizes: ParallelSizes, devices: int, cfg) -> None:
    """Raise UserInputError (one line: key, value, what is allowed) if the strategies cannot apply: the rules of
    config.check_parallel_sizes (their one home) for cfg with these sizes on `devices` devices in auto mode."""
    par = cfg.parallel_config
    for key, value in (("data_parallel", sizes.dp), ("model_parallel", sizes.mp), ("expert_parallel", sizes.ep)):
        if value < 1:
            raise UserInputError(f"parallel_config.{key} = {value}: must be >= 1")
    if devices % par.devices_per_node:
        raise UserInputError(f"parallel_config.devices_per_node = {par.devices_per_node}: must divide the device "
                             f"count ({devices})")
    trial = copy.deepcopy(cfg)
    trial.parallel_config.nodes = devices // par.devices_per_node
    trial.parallel_config.data_parallel, trial.parallel_config.model_parallel = sizes.dp, sizes.mp
    trial.parallel_config.expert_parallel, trial.parallel_config.mode = sizes.ep, "auto"
    check_parallel_sizes(trial)


def _numel(layout: TensorLayout, dims: dict[str, int]) -> int:
    return prod(dims[s] for s, _ in layout)


def _signature(sizes: ParallelSizes, layout: TensorLayout, dims: dict[str, int]) -> frozenset:
    """Which flat (row-major) elements a device holds, as (period, block, axis) per mesh axis of size > 1; equal
    signatures mean equal shards, so a Reshape between them is free."""
    out, stride = set(), 1
    for sym, axes in reversed(layout):
        n = dims[sym]
        period = n * stride
        for axis in axes:
            if sizes.axis(axis) > 1:
                block = period // sizes.axis(axis)
                out.add((period, block, axis))
                period = block
        stride *= n
    return frozenset(out)


def _without(sig: frozenset, axes: tuple[str, ...]) -> frozenset:
    return frozenset(e for e in sig if e[2] not in axes)


def _explains(collective: str | None, before: frozenset, after: frozenset) -> bool:
    if collective is None:
        return False
    kind, _, name = collective.partition(":")
    axes = ALIASES[name]
    moved = {e[2] for e in before ^ after}
    if not moved <= set(axes) or _without(before, axes) != _without(after, axes):
        return False
    had = {e[2] for e in before} & set(axes)
    has = {e[2] for e in after} & set(axes)
    return {"all_gather": not has, "slice": not had, "all_to_all": had == has}[kind]


@dataclass
class StrategyReport:
    problems: list[str] = field(default_factory=list)
    redistributions: list[tuple[str, str, str]] = field(default_factory=list)  # (producer, consumer, collective)


def check_strategies(sizes: ParallelSizes, dims: dict[str, int]) -> StrategyReport:
    """Every split divides its dimension and the device count; matmul operands agree; each op's output follows
    from its inputs; along DATA_FLOW the producer's output layout equals the consumer's input layout, except for
    the intended redistributions, which are listed with the collective they cost at these sizes."""
    report, devices = StrategyReport(), sizes.devices
    for key, spec in OPS.items():
        used: set[str] = set()
        for i, layout in enumerate(spec.inputs + (spec.output,)):
            where = f"{key} {'output' if i == len(spec.inputs) else f'input {i}'}"
            for sym, axes in layout:
                used.update(axes)
                if dims[sym] % sizes.split(axes):
                    report.problems.append(f"{where}: dimension {sym} = {dims[sym]} is not divisible by its split "
                                           f"{sizes.split(axes)} ({'*'.join(axes)})")
            if devices % prod(splits(sizes, layout)):
                report.problems.append(f"{where}: product of splits {prod(splits(sizes, layout))} does not "
                                       f"divide {devices} devices")
        if devices % prod(sizes.axis(a) for a in used):
            report.problems.append(f"{key}: device matrix does not divide {devices} devices")
        report.problems.extend(f"{key}: {msg}" for msg in _op_rules(spec))
    for edge in DATA_FLOW:
        out, inp = OPS[edge.producer].output, OPS[edge.consumer].inputs[edge.index]
        name = f"{edge.producer} -> {edge.consumer}[{edge.index}]"
        if _numel(out, dims) != _numel(inp, dims):
            report.problems.append(f"{name}: {_numel(out, dims)} elements produced, {_numel(inp, dims)} consumed")
            continue
        before, after = _signature(sizes, out, dims), _signature(sizes, inp, dims)
        if before == after:
            continue
        if _explains(edge.collective, before, after):
            if not edge.collective.startswith("slice"):
                report.redistributions.append((edge.producer, edge.consumer, edge.collective))
        else:
            report.problems.append(f"{name}: produced as {show(out)}, consumed as {show(inp)}")
    return report


def _op_rules(spec: OpSpec) -> list[str]:
    """Per-primitive layout rules MindSpore enforces (or that make the output layout follow from the inputs)."""
    errors, ins, out = [], spec.inputs, spec.output
    axes = lambda layout: tuple(a for _, a in layout)  # noqa: E731
    if spec.primitive in ("MatMulExt", "BatchMatMul"):
        x, w = ins
        if x[-1][1] != w[-2][1]:
            errors.append(f"contracted dimension split {x[-1][1]} vs {w[-2][1]}")
        if len(w) > 2 and axes(x[:-2][-(len(w) - 2):]) != axes(w[:-2]):
            errors.append("batch dimensions split differently")
        if axes(out) != axes(x[:-1]) + (w[-1][1],):
            errors.append(f"output {show(out)} does not follow from the inputs")
    elif spec.primitive == "Transpose":
        if axes(out) != tuple(axes(ins[0])[p] for p in spec.perm):
            errors.append(f"output {show(out)} is not the permuted input")
    elif spec.primitive in ("Add", "Mul", "Activation", "Softmax", "LayerNorm", "StridedSlice", "CumSum"):
        for other in ins[1:]:
            for (sym, split), (_, base) in zip(other, ins[0][-len(other):] if other else ()):
                if split != (() if sym == "one" else base):
                    errors.append(f"broadcast operand {show(other)} split unlike {show(ins[0])}")
                    break
        if axes(out) != axes(ins[0]):
            errors.append(f"output {show(out)} differs from input {show(ins[0])}")
    if spec.axis is not None and ins[0][spec.axis][1]:
        errors.append(f"axis {spec.axis} is split but {spec.primitive} needs it whole")
    return errors


def check_topology(sizes: ParallelSizes, topology) -> list[str]:
    """The placement the layouts give (MindSpore's rank order) equals Topology's: each rank's token group and
    expert block. This is what makes the locality loss describe the cluster that runs."""
    problems = []
    per = topology.expert_num // sizes.ep
    for rank in range(sizes.devices):
        c = sizes.coordinates(rank)
        group = c["edp"] * sizes.ep + c["ep"]          # index of the rank's B:dp (= edp, ep) shard
        experts = list(range(c["ep"] * per, (c["ep"] + 1) * per))  # its E:ep shard
        if group != topology.token_group_of_rank(rank) or experts != topology.experts_of_rank(rank):
            problems.append(f"rank {rank}: layouts give token group {group}, experts {experts}; topology says "
                            f"{topology.token_group_of_rank(rank)}, {topology.experts_of_rank(rank)}")
    return problems
