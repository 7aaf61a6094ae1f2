"""MindSpore auto-parallel on Ascend: the parallel context and the shard strategies of parallel/strategies.py.

NOT RUN ON ASCEND HARDWARE. Compiled for virtual clusters of 8 to 256 devices by tools/ascend_dryrun.py (stand-in
CANN libraries, MS_SIMULATION_LEVEL=0), which checks the layouts and collectives MindSpore derives; on CPU the
strategy table, its consistency checks and `shard_plan` are tested. MindSpore 2.10 has no semi_auto_parallel on
CPU; there the same model runs with the explicit exchange (parallel/exchange.py) under msrun.

How it applies. Most cells call functional ops (ops.matmul, ops.bmm, ...) and own no Primitive instances, so
per-op `Primitive.shard` has nothing to attach to. `apply_shard_strategies` therefore
- calls `Cell.shard(in_strategy, out_strategy, parameter_plan)` on the cells listed in CELL_OPS (Linear, LayerNorm,
  Experts): their input and output layouts and their parameters' layouts, as MindSpore `Layout`s of the ("edp",
  "ep", "mp") mesh so the rank order is Topology's; MindSpore's sharding propagation derives the ops in between,
  which is why `set_parallel_context` uses parallel_mode "auto_parallel" with search_mode "sharding_propagation";
- calls `Primitive.shard` on the primitives cells own under a name in PRIMITIVE_OPS (the Dispatcher's, the
  group-wise exchange's layouts and transposes, the attention, gate, softmax and logits matmuls, the experts'
  matmuls, bias add and activation, the loss's gather) and on the `matmul` a CELL_OPS Linear owns: left to sharding
  propagation, these were split so that MindSpore inserted gathers strategies.py does not plan (the GrAP gate's
  ops.dense even ran batch-parallel over all devices; with dp/ep > 1 the experts' activation was gathered whole).
Under auto-parallel MindSpore partitions the *global* graph: parallel/auto.py builds the network with the
one-process placement (every token group and expert, LocalExchange); the explicit exchange and auto-parallel are
alternatives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.strategies import (OPS, ParallelSizes, TensorLayout, in_strategies, layout_of,
                                           mindspore_layouts, parameter_layout, validate, MESH_AXES)

# Cell path suffix -> the op whose input 0 is the cell's input; first match wins. The cell's output layout is that
# of CELL_OUTPUTS[op] (the bias add after a projection), else the op's own. Not listed, its layouts left to sharding
# propagation: the router gate, a cell returning a tuple, on which MindSpore 2.10 fails in the backward pass ("Did
# not create OperatorInfo for : Depend", seen in the dry-run compile, tools/ascend_dryrun.py).
CELL_OPS: tuple[tuple[str, str], ...] = (
    ("query_layer.attention.query", "query_layer.query"),
    (".attention.query", "attention.query"),
    (".attention.key", "attention.key"),
    (".attention.value", "attention.value"),
    (".attention.out", "attention.out"),
    (".ffn.w_in", "ffn.w_in"),
    (".ffn.w_out", "ffn.w_out"),
    (".moe.experts", "experts.w_in"),
    (".ln_attention", "attention.layernorm"),
    (".ln_ffn", "ffn.layernorm"),
    (".ln_moe", "moe.layernorm"),
    ("final_norm", "head.layernorm"),
)

CELL_OUTPUTS: dict[str, str] = {
    "query_layer.query": "query_layer.query.bias",
    "attention.query": "attention.query.bias",
    "attention.key": "attention.key.bias",
    "attention.value": "attention.value.bias",
    "attention.out": "attention.out.bias",
    "ffn.w_in": "ffn.w_in.bias",
    "ffn.w_out": "ffn.w_out.bias",
    "experts.w_in": "experts.b_out",
}

# (cell class name, attribute) -> op: primitives a cell may own to have that op pinned by Primitive.shard.
PRIMITIVE_OPS: dict[tuple[str, str], str] = {
    ("Attention", "broadcast"): "query_layer.broadcast",
    ("Attention", "scores_matmul"): "attention.scores",
    ("Attention", "softmax"): "attention.softmax",
    ("Attention", "context_matmul"): "attention.context",
    ("LearnedRouter", "softmax"): "router.softmax",
    ("Dispatcher", "match"): "dispatch.match",
    ("Dispatcher", "pad_tokens"): "dispatch.pad",
    ("Dispatcher", "pad_slots"): "combine.pad",
    ("Dispatcher", "gather_slots"): "dispatch",
    ("Dispatcher", "gather_tokens"): "combine",
    ("GroupwiseLayouts", "send_slice"): "exchange.send_slice",
    ("GroupwiseLayouts", "send_all_to_all"): "exchange.all_to_all",
    ("GroupwiseLayouts", "send_all_gather"): "exchange.all_gather",
    ("GroupwiseLayouts", "return_slice"): "exchange.return_slice",
    ("GroupwiseLayouts", "return_all_to_all"): "exchange.return_all_to_all",
    ("GroupwiseLayouts", "return_all_gather"): "exchange.return_all_gather",
    ("GroupwiseLayouts", "to_groups"): "exchange.to_groups",
    ("GroupwiseLayouts", "to_experts"): "exchange.to_experts",
    ("GroupwiseLayouts", "from_experts"): "exchange.from_experts",
    ("GroupwiseLayouts", "back"): "exchange.back",
    ("Experts", "bmm_in"): "experts.w_in",
    ("Experts", "bmm_out"): "experts.w_out",
    ("Experts", "add_in"): "experts.b_in",
    ("ExpertActivation", "unary"): "experts.act",
    ("ExpertActivation", "scale_in"): "experts.act.scalar",
    ("ExpertActivation", "erf"): "experts.act",
    ("ExpertActivation", "shift"): "experts.act.scalar",
    ("ExpertActivation", "product"): "experts.act.product",
    ("ExpertActivation", "scale_out"): "experts.act.scalar",
    ("PanGuSigmaLM", "logits_matmul"): "head.logits",
    ("GrAPGate", "matmul"): "gate",
    ("DenseGate", "matmul"): "gate",
    ("AutodiffCrossEntropy", "shift"): "loss.shift",
    ("AutodiffCrossEntropy", "pick"): "loss.pick",
}


# Pinned primitives whose strategy is a tuple of Layouts (rank order pinned to Topology's), not numeric splits: the
# expert ops see E:ep before GC:edp (or G:edp), an order numeric strategies cannot give when dp/ep > 1 and ep > 1;
# sharding propagation does not carry a Layout through the ops between, so every one of them is pinned.
LAYOUT_PRIMITIVES = ("experts.w_in", "experts.b_in", "experts.act", "experts.act.scalar", "experts.act.product",
                     "experts.w_out", "exchange.from_experts", "query_layer.query")


@dataclass
class CellPlan:
    path: str
    op: str
    inputs: tuple[TensorLayout, ...]
    parameters: dict[str, TensorLayout]
    output: TensorLayout | None = None


@dataclass
class ShardPlan:
    cells: list[CellPlan] = field(default_factory=list)
    primitives: list[tuple[str, str]] = field(default_factory=list)  # (cell path.attribute, op)
    other_parameters: dict[str, TensorLayout | None] = field(default_factory=dict)  # left to propagation


def _cell_op(path: str) -> str | None:
    for suffix, op in CELL_OPS:
        if path.endswith(suffix):
            return op
    return None


def shard_plan(network: Any) -> ShardPlan:
    """Which cells, parameters and primitives of `network` get which layouts. Pure: touches no context."""
    from mindspore.ops import Primitive

    plan, planned = ShardPlan(), set()
    for path, cell in network.cells_and_names():
        op = _cell_op(path)
        if op is not None:
            params = {p.name: parameter_layout(p.name) for p in cell.get_parameters()}
            plan.cells.append(CellPlan(path, op, (OPS[op].inputs[0],), params, OPS[CELL_OUTPUTS.get(op, op)].output))
            planned.update(params)
            if isinstance(getattr(cell, "matmul", None), Primitive):  # a Linear: its op is the matmul it owns
                plan.primitives.append((f"{path}.matmul", op))
        for (cls, attr), prim_op in PRIMITIVE_OPS.items():
            if type(cell).__name__ == cls and isinstance(getattr(cell, attr, None), Primitive):
                plan.primitives.append((f"{path}.{attr}", prim_op))
    for p in network.trainable_params():
        if p.name not in planned:
            plan.other_parameters[p.name] = parameter_layout(p.name)
    return plan


def set_parallel_context(cfg, parallel_mode: str = "auto_parallel", strategy_file: str | None = None) -> ParallelSizes:
    """Initialise HCCL and MindSpore's auto-parallel context for cfg's parallel_config (Ascend only).

    "auto_parallel" uses sharding propagation from the layouts apply_shard_strategies sets; "semi_auto_parallel"
    needs a strategy on every op, which only cells owning their primitives can give. The graph takes the global
    batch on every rank (full_batch): the model's token groups, capacity and offsets are built for the global
    batch, which a per-rank dataset strategy would rescale. `strategy_file`: where MindSpore saves the strategy
    checkpoint (every parameter's layout) at compile time."""
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

    _require_ascend(ms)
    init()
    world = get_group_size()
    if world != sizes.devices:
        raise UserInputError(f"parallel_config.nodes = {par.nodes}: nodes * devices_per_node ({cfg.virtual_devices}) "
                             f"must equal the launched ranks ({world})")
    extra = {"search_mode": "sharding_propagation"} if parallel_mode == "auto_parallel" else {}
    ms.set_auto_parallel_context(parallel_mode=parallel_mode, device_num=world, gradients_mean=True,
                                 enable_alltoall=True, full_batch=True, **extra)
    if strategy_file:
        ms.set_auto_parallel_context(strategy_ckpt_config={"save_file": strategy_file, "only_trainable_params": False})
    return sizes


def apply_shard_strategies(network: Any, cfg) -> ShardPlan:
    """Attach the strategies of `shard_plan(network)` (Cell.shard with parameter plans; Primitive.shard where a
    cell owns a listed primitive). Call after set_parallel_context, before compiling."""
    import mindspore as ms
    from mindspore.parallel import Layout

    _require_ascend(ms)
    sizes = ParallelSizes.from_config(cfg)
    mesh = Layout(tuple(sizes.axis(a) for a in MESH_AXES), MESH_AXES)
    plan = shard_plan(network)
    numeric = in_strategies(sizes)
    cells = dict(network.cells_and_names())
    for entry in plan.cells:
        params = {name: layout_of(mesh, t) for name, t in entry.parameters.items() if t is not None}
        out = (layout_of(mesh, entry.output),) if entry.output is not None else None
        cells[entry.path].shard(in_strategy=tuple(layout_of(mesh, t) for t in entry.inputs), out_strategy=out,
                                parameter_plan=params or None)
    for where, op in plan.primitives:
        path, _, attr = where.rpartition(".")
        # numeric strategies: with a Layout on a primitive MindSpore 2.10 failed ("GatherDInfo / ConcatInfo
        # SetCostUnderLayout failed"); numeric ones order the device matrix by tensor dimension with the repeated
        # mp copies innermost, so every pinned op lists its (edp, ep) dimensions before the others (Topology's order);
        # the expert ops list E:ep before GC:edp, so they take Layouts (BatchMatMul, Add, Mul, Div, Erf and
        # Transpose accept them)
        strategy = mindspore_layouts(sizes, op) if op in LAYOUT_PRIMITIVES else numeric[op]
        getattr(cells[path], attr).shard(strategy)
    return plan


def _require_ascend(ms: Any) -> None:
    target = ms.get_context("device_target")
    if target != "Ascend":
        raise UserInputError(f"device_target = {target!r}: shard strategies apply on Ascend only; on CPU the "
                             f"explicit exchange (parallel_config.communicator local or cpu) is used")
