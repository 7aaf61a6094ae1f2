"""Evidence from an Ascend dry-run compile (tools/ascend_dryrun.py): collectives in the IR, parameter layouts.

A dry-run compile (stand-in CANN libraries, MS_SIMULATION_LEVEL=0) runs MindSpore's parallel passes up to
`step_parallel` for one rank of a virtual cluster; nothing executes. What it leaves behind is read here:
- the `step_parallel_end` IR: every AllGather / AlltoAll / AllReduce / ReduceScatter MindSpore inserted or the
  model asked for, with its group's ranks and the cell scope it belongs to (`parse_collectives`);
- `parameter_layout_dict` (auto mode): each parameter's device matrix, tensor map and slice shape, compared with
  parallel/layout.py's splits and Topology's rank order (`layout_problems`) and with the strategy checkpoint
  MindSpore saves (`checkpoint_problems`);
- the expected communication of the exchange (`expert_exchange_problems`) and the redistributions
  autoparallel/table.py does not list (`unlisted_redistributions`).
Pure Python: no MindSpore import, so tests can check saved results cheaply.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from locmoe_ms.parallel.layout import parameter_split
from locmoe_ms.autoparallel.mesh import ParallelSizes
from locmoe_ms.parallel.topology import Topology

COLLECTIVES = ("AllGather", "AlltoAll", "AlltoAllV", "AllReduce", "ReduceScatter", "_MirrorOperator")
_NODE = re.compile(r"=\s*(" + "|".join(COLLECTIVES) + r")\((.*)$")
_ATTR = re.compile(r'(\w+): ("[^"]*"|I64\(-?\d+\)|Bool\(\d\))')
_SCOPE = re.compile(r"# (?:Fullname with scope|Scope): \((.*)\)")
_RANK_IDS = re.compile(r"group_rank_ids: \(([\d, ]*)\)")
_SHAPE = re.compile(r":\s*\(<[^>]*?,\s*\(([\d, ]*)\)")
_DTYPE = re.compile(r":\s*\(<Tensor\[(\w+)\]")
_FIRST_OPERAND = re.compile(r"=\s*[\w.]+\((%\d+)")
OPTIMIZER_PREFIXES = ("adam_m.", "adam_v.", "moment1.", "moment2.", "accu_grads.")


@dataclass(frozen=True)
class Collective:
    """One collective node of the IR."""
    op: str                    # AllGather, AlltoAll, AllReduce, ReduceScatter, _MirrorOperator (gradient AllReduce)
    group: str                 # MindSpore's group name (created groups keep theirs, e.g. locmoe_1_3_5_7)
    ranks: tuple[int, ...]     # world ranks of the group; () for the world group
    scope: str                 # cell scope, e.g. Default/loss_net-.../1-SparseBlock/moe-MoELayer/...
    kind: str                  # redistribution (inserted by MindSpore), forward_op (row-parallel sum), mirror,
                               # optimizer (the parallel optimizer's weight AllGather / gradient ReduceScatter), model
    shape: tuple[int, ...] = ()
    parameter: str = ""        # the parameter a mirror or optimizer collective serves (mirror_user_id)
    dtype: str = ""            # the operand's element type as the IR writes it (Float32, Float16, ...)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def gradient(self) -> bool:
        return "Gradients" in self.scope or self.kind == "mirror"


def find_ir(ir_dir: str | Path, stages: Sequence[str] = ("step_parallel_end", "validate"),
            newer_than: float = 0.0) -> Path | None:
    """The IR file of the first stage MindSpore wrote under ir_dir (MS_DEV_SAVE_GRAPHS_PATH), or None: the
    parallel passes' `step_parallel_end` under auto-parallel, `validate` in a stand-alone (explicit mode) graph.
    The newest such file, and none older than `newer_than` (a time.time()): a reused directory keeps old dumps."""
    for stage in stages:
        files = [f for f in Path(ir_dir).rglob(f"*{stage}*.ir") if f.stat().st_mtime >= newer_than]
        if files:
            return max(files, key=lambda f: f.stat().st_mtime)
    return None


def _ranks(text: str, group: str, world: int | None) -> tuple[int, ...]:
    """Ranks of a group: MindSpore's group_ranks attribute, or a created group's name (locmoe_1_3_5_7)."""
    if not text and group.startswith("locmoe_"):
        return tuple(int(r) for r in group[len("locmoe_"):].split("_"))
    if text in ("", "WORLD_GROUP"):
        return tuple(range(world)) if world else ()
    return tuple(int(r) for r in text.split("-"))


def _operand_dtype(lines: Sequence[str], i: int, depth: int = 24) -> str:
    """Element type of node i's first operand. The parallel passes leave the nodes they insert untyped
    (`<null>` in step_parallel_end), so an untyped operand is followed back to the nearest typed node; reshapes,
    slices and the redistributions keep the element type."""
    for _ in range(depth):
        for follow in lines[i + 1:i + 3]:
            if follow.lstrip().startswith(":"):
                typed = _DTYPE.search(follow)
                if typed:
                    return typed.group(1)
                break
        operand = _FIRST_OPERAND.search(lines[i])
        if not operand:
            return ""
        head = f"  {operand.group(1)}("
        i = next((j for j in range(i - 1, -1, -1) if lines[j].startswith(head)), -1)
        if i < 0:
            return ""
    return ""


def parse_collectives(ir_text: str, world: int | None = None) -> list[Collective]:
    """Every collective node of an IR dump, in order. `world` fills in the ranks of the world group."""
    found: list[Collective] = []
    lines = ir_text.splitlines()
    for i, line in enumerate(lines):
        match = _NODE.search(line)
        if not match:
            continue
        attrs = {k: v.strip('"') for k, v in _ATTR.findall(line)}
        instance = re.search(r"instance name: ([^}]*)}", line)
        name = instance.group(1) if instance else ""
        optimizer = name.startswith("parallel_optimizer") or (match.group(1) == "ReduceScatter" and
                                                              "mirror_user_id" in attrs)
        kind = ("mirror" if match.group(1) == "_MirrorOperator" else "optimizer" if optimizer else
                "redistribution" if "redistribution" in name else "forward_op" if name.startswith("forward_op")
                else "model")
        scope, shape = "", ()
        for follow in lines[i + 1:i + 4]:
            shape_match = _SHAPE.search(follow)
            if shape_match and not shape:
                shape = tuple(int(d) for d in shape_match.group(1).replace(" ", "").split(",") if d)
            scope_match = _SCOPE.search(follow)
            if scope_match:
                scope = scope_match.group(1)
                break
        group = attrs.get("group", "")
        listed = _RANK_IDS.search(line)  # the validate IR writes a group's ranks as a tuple
        ranks = tuple(int(r) for r in listed.group(1).replace(" ", "").split(",") if r) if listed else \
            _ranks(attrs.get("group_ranks", ""), group, world)
        found.append(Collective(match.group(1), group, ranks, scope, kind,
                                shape, attrs.get("mirror_user_id", ""), _operand_dtype(lines, i)))
    return found


def summarize(collectives: Iterable[Collective]) -> list[tuple[str, str, tuple[int, ...], str, int]]:
    """(op, group, ranks, kind, count), one row per distinct collective, most frequent first."""
    counts: dict[tuple, int] = {}
    for c in collectives:
        key = (c.op, c.group, c.ranks, c.kind)
        counts[key] = counts.get(key, 0) + 1
    return sorted(((*k, n) for k, n in counts.items()), key=lambda row: (-row[4], row[0]))


# ------------------------------------------------------------------ parameter layouts (auto mode)

def model_parameter(name: str) -> str:
    """An optimizer moment's parameter name (adam_m.x -> x); other names unchanged."""
    for prefix in OPTIMIZER_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def shard_index(device_matrix: Sequence[int], tensor_map_entry, rank: int) -> int:
    """Which shard of one tensor dimension `rank` holds: MindSpore numbers the device matrix row-major and a
    tensor-map value d names device-matrix axis len(matrix) - 1 - d (-1: not split)."""
    entries = tensor_map_entry if isinstance(tensor_map_entry, (list, tuple)) else (tensor_map_entry,)
    coords, rest = [], rank % max(1, _product(device_matrix))
    for size in reversed(device_matrix):
        coords.append(rest % size)
        rest //= size
    coords.reverse()
    index = 0
    for d in entries:
        if d == -1:
            continue
        axis = len(device_matrix) - 1 - d
        index = index * device_matrix[axis] + coords[axis]
    return index


def _product(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def expected_slice(name: str, shape: Sequence[int], sizes: ParallelSizes) -> tuple[int, ...]:
    """The slice of a parameter (or its optimizer moment) one device holds under parallel/layout.py's split."""
    split = parameter_split(model_parameter(name))
    out = list(shape)
    if split.expert_axis is not None:
        out[split.expert_axis] //= sizes.ep
    if split.model_axis is not None:
        out[split.model_axis] //= sizes.mp
    return tuple(out)


def layout_problems(layouts: Mapping[str, Sequence], shapes: Mapping[str, Sequence[int]], sizes: ParallelSizes,
                    topology: Topology, rank: int) -> list[str]:
    """Parameters whose MindSpore layout differs from parallel/layout.py's split, or whose expert / tensor-parallel
    shard on `rank` is not the one Topology places there. `layouts`: name -> (device_matrix, tensor_map,
    slice_shape, ...) from parameter_layout_dict; `shapes`: full shape of every model parameter."""
    problems = []
    for name, shape in shapes.items():
        names = [name] + [p + name for p in ("adam_m.", "adam_v.") if p + name in layouts]
        for key in names:
            if key not in layouts:
                problems.append(f"{key}: no layout (replicated everywhere?), layout.py expects slice "
                                f"{expected_slice(key, shape, sizes)} of {tuple(shape)}")
                continue
            matrix, tensor_map, slice_shape = (list(v) for v in layouts[key][:3])
            want = expected_slice(key, shape, sizes)
            if tuple(slice_shape) != want:
                problems.append(f"{key}: slice {tuple(slice_shape)} of {tuple(shape)}, layout.py expects {want}")
                continue
            split = parameter_split(name)
            for axis, blocks, expect in ((split.expert_axis, sizes.ep, topology.expert_block(rank)),
                                         (split.model_axis, sizes.mp, rank % sizes.mp)):
                if axis is None or blocks == 1:
                    continue
                got = shard_index(matrix, tensor_map[axis], rank)
                if got != expect:
                    problems.append(f"{key}: rank {rank} holds shard {got} of axis {axis}, topology places "
                                    f"shard {expect} there")
    return problems


def normalized(device_matrix: Sequence[int], tensor_map: Sequence) -> tuple[tuple[int, ...], tuple]:
    """A layout without device-matrix axes of size 1 (MindSpore writes [1, 4, 2] or [4, 2] for the same layout)."""
    n = len(device_matrix)
    keep = [i for i in range(n) if device_matrix[i] != 1]
    new_index = {n - 1 - i: len(keep) - 1 - k for k, i in enumerate(keep)}  # tensor-map value -> new value

    def remap(entry):
        if isinstance(entry, (list, tuple)):
            return tuple(v for v in (remap(e) for e in entry) if v != -1) or -1
        return new_index.get(entry, -1)

    return tuple(device_matrix[i] for i in keep), tuple(remap(e) for e in tensor_map)


def checkpoint_problems(layouts: Mapping[str, Sequence], checkpoint: Mapping[str, Mapping],
                        names: Iterable[str]) -> list[str]:
    """Parameters (`names`, and whatever else the checkpoint holds) whose layout in MindSpore's strategy checkpoint
    (dev_matrix, tensor_map) differs from parameter_layout_dict's, or that the checkpoint lacks: the two records
    of one compile must agree."""
    problems = []
    for name in sorted(set(names) | (set(checkpoint) & set(layouts))):
        layout, saved = layouts.get(name), checkpoint.get(name)
        if layout is None:
            problems.append(f"{name}: no layout in parameter_layout_dict")
        elif saved is None:
            problems.append(f"{name}: not in the strategy checkpoint")
        elif normalized(saved["dev_matrix"], saved["tensor_map"]) != normalized(layout[0], layout[1]):
            problems.append(f"{name}: strategy checkpoint {saved['dev_matrix']} {saved['tensor_map']}, "
                            f"parameter_layout_dict {list(layout[0])} {list(layout[1])}")
    return problems


# ------------------------------------------------------------------ communication checks

def in_moe(scope: str) -> bool:
    return "moe-MoELayer" in scope


def in_exchange(scope: str) -> bool:
    """The exchange's cells: GroupwiseLayouts (auto mode) or the explicit exchange."""
    return in_moe(scope) and ("layouts-GroupwiseLayouts" in scope or "exchange-" in scope)


def expert_exchange_problems(collectives: Sequence[Collective], topology: Topology, rank: int,
                             groupwise: bool) -> list[str]:
    """The expert exchange is an AlltoAll over rank's expert-parallel group; the group-wise exchange adds an
    AllGather inside its tensor-parallel group. Both must appear (inside the MoE layer)."""
    problems = []
    ep_group, tp_group = topology.expert_group(rank), topology.tensor_group(rank)
    if len(ep_group) > 1 and not any(c.op == "AlltoAll" and c.ranks == ep_group and in_moe(c.scope)
                                     for c in collectives):
        problems.append(f"no AlltoAll over the expert-parallel group {ep_group} in the MoE layer")
    if groupwise and len(tp_group) > 1 and not any(c.op == "AllGather" and c.ranks == tp_group and in_moe(c.scope)
                                                   for c in collectives):
        problems.append(f"no AllGather over the tensor-parallel group {tp_group} in the MoE layer")
    return problems


def intended_groups(topology: Topology, rank: int) -> dict[str, set[tuple[int, ...]]]:
    """Groups on which autoparallel/table.py plans communication, per collective: the exchange (AlltoAll over
    ep, AllGather over mp), row-parallel matmuls (AllReduce over mp), global-batch sums (AllReduce over dp)."""
    tp, ep, dp = topology.tensor_group(rank), topology.expert_group(rank), topology.data_group(rank)
    return {"AlltoAll": {ep}, "AllGather": {tp}, "AllReduce": {tp, dp}, "ReduceScatter": set()}


def unlisted_redistributions(collectives: Sequence[Collective], topology: Topology, rank: int,
                             gathered: Sequence[tuple[str, str, tuple[int, ...], str]] = ()) -> list[Collective]:
    """Forward-pass redistributions MindSpore inserted that the strategy table does not plan: anything but the
    exchange's AlltoAll (ep) inside the MoE layer and AllGather (mp) inside its layouts (auto mode) or exchange
    (explicit mode), row-parallel / global sums (AllReduce), and the small gathers of `gathered`
    (table.gathered_shapes: collective, group "dp" or "all", full shape, reason). Gradient mirrors,
    backward-pass collectives (the adjoints of forward ones) and the parallel optimizer's collectives (checked
    against its plan by `optimizer_problems`) are not counted."""
    intended = intended_groups(topology, rank)
    world = tuple(range(topology.world))
    intended["AllReduce"].add(world)  # a flag agreed by every rank (loss-scale overflow)
    groups = {"dp": topology.data_group(rank), "all": world}
    accepted = {(op, groups[group], tuple(shape)) for op, group, shape, _ in gathered}
    out = []
    for c in collectives:
        if c.gradient or c.kind == "optimizer" or c.op not in intended or (c.op, c.ranks, c.shape) in accepted:
            continue
        where = c.op == "AllReduce" or (in_exchange(c.scope) if c.op == "AllGather" else in_moe(c.scope))
        if not (c.ranks in intended[c.op] and where):
            out.append(c)
    return out


# ------------------------------------------------------------------ the parallel optimizer (auto mode)

def optimizer_problems(forward: Sequence[Collective], backward: Sequence[Collective],
                       planned: Mapping[str, tuple[int, ...]], trainable: Iterable[str],
                       micro_batches: int = 1) -> list[str]:
    """The parallel optimizer's collectives against its plan (`planned`: parameter -> ranks of its shard group,
    autoparallel/slices.py): one weight AllGather per sharded parameter in the forward IR (`forward`, the
    step_parallel_end collectives; the micro-batches of a step share it) and one gradient ReduceScatter per sharded
    trainable parameter and micro-batch in the backward (`backward`, the validate IR's), each over its planned
    group, and none for any other parameter."""
    problems = []
    trainable = set(trainable)
    for op, seen, want, count in (("AllGather", forward, dict(planned), 1),
                                  ("ReduceScatter", backward, {n: g for n, g in planned.items() if n in trainable},
                                   micro_batches)):
        got: dict[str, list[tuple[int, ...]]] = {}
        for c in seen:
            if c.kind == "optimizer" and c.op == op:
                got.setdefault(c.parameter, []).append(c.ranks)
        for name in sorted(set(got) | set(want)):
            if name not in want:
                problems.append(f"{name}: parallel-optimizer {op} over {got[name]}, the plan keeps it unsharded")
            elif got.get(name) != [want[name]] * count:
                problems.append(f"{name}: parallel-optimizer {op} over {got.get(name, [])}, the plan expects "
                                f"{count} over {want[name]}")
    return problems


def stored_shape_problems(stored: Mapping[str, Sequence[int]], planned: Mapping[str, Sequence[int]]) -> list[str]:
    """Parameters and optimizer moments whose shape as the compiled graph stores it differs from the plan's
    (`planned`: name -> stored shape, moments under their own names)."""
    return [f"{name}: stored as {tuple(stored.get(name, ()))}, the plan says {tuple(planned.get(name, ()))}"
            for name in sorted(set(stored) | set(planned))
            if tuple(stored.get(name, ())) != tuple(planned.get(name, ()))]


def strategy_record_problems(checkpoint: Mapping[str, Mapping], planned: Mapping[str, tuple[int, ...]],
                             names: Iterable[str]) -> list[str]:
    """The strategy checkpoint records the optimizer shard as MindSpore's transforms read it: a planned parameter
    (`planned`: name -> ranks of its shard group) with opt_weight_shard_size -1 (the whole group) and
    opt_weight_shard_step the rank stride inside the group; every other one (of `names`) with 0 and 0."""
    problems = []
    for name in sorted(set(names)):
        saved = checkpoint.get(name)
        if saved is None or "opt_weight_shard_size" not in saved:
            continue  # checkpoint_problems names the missing ones
        ranks = planned.get(model_parameter(name), ())
        want = (-1, ranks[1] - ranks[0]) if len(ranks) > 1 else (0, 0)
        got = (saved["opt_weight_shard_size"], saved["opt_weight_shard_step"])
        if got != want:
            problems.append(f"{name}: strategy checkpoint records optimizer shard (size, step) {got}, the plan "
                            f"expects {want}")
    return problems

