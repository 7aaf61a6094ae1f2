"""The shard strategies of the op table (autoparallel/table.py) attached to a built network.

How it applies. Most cells call functional ops (ops.matmul, ops.bmm, ...) and own no Primitive instances, so
per-op `Primitive.shard` has nothing to attach to. `apply_shard_strategies` therefore
- calls `Cell.shard(in_strategy, out_strategy, parameter_plan)` on the cells listed in CELL_OPS (Linear, LayerNorm,
  Experts): their input and output layouts and their parameters' layouts, as MindSpore `Layout`s of the ("edp",
  "ep", "mp") mesh so the rank order is Topology's; MindSpore's sharding propagation derives the ops in between,
  which is why `set_parallel_context` (autoparallel/context.py) uses parallel_mode "auto_parallel" with search_mode
  "sharding_propagation";
- calls `Primitive.shard` on the primitives cells own under a name in PRIMITIVE_OPS (the Dispatcher's, the
  group-wise exchange's layouts and transposes, the attention, gate, softmax and logits matmuls, the experts'
  matmuls, bias add and activation, the loss's gather) and on the `matmul` a CELL_OPS Linear owns: left to sharding
  propagation, these were split so that MindSpore inserted gathers the op table does not plan (the GrAP gate's
  ops.dense even ran batch-parallel over all devices; with dp/ep > 1 the experts' activation was gathered whole).
Under auto-parallel MindSpore partitions the *global* graph: autoparallel/build.py builds the network with the
one-process placement (every token group and expert, LocalExchange); the explicit exchange and auto-parallel are
alternatives. `shard_plan` is pure (tested on CPU); `apply_shard_strategies` needs the Ascend context.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from locmoe_ms.autoparallel.context import require_ascend
from locmoe_ms.autoparallel.layouts import in_strategies, layout_of, mindspore_layouts
from locmoe_ms.autoparallel.mesh import MESH_AXES, ParallelSizes, TensorLayout
from locmoe_ms.autoparallel.table import OPS, parameter_layout


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
    ("Dispatcher", "to_compute"): "dispatch.cast",
    ("Dispatcher", "to_float32"): "combine.cast",
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
    ("PanGuSigmaLM", "embedding_gather"): "embedding.gather",
    ("VocabParallelCrossEntropy", "row_max"): "loss.max",
    ("VocabParallelCrossEntropy", "shift"): "loss.shift",
    ("VocabParallelCrossEntropy", "exp"): "loss.exp",
    ("VocabParallelCrossEntropy", "row_sum"): "loss.sum",
    ("VocabParallelCrossEntropy", "one_hot"): "loss.one_hot",
    ("VocabParallelCrossEntropy", "pick"): "loss.pick",
    ("VocabParallelCrossEntropy", "pick_sum"): "loss.pick_sum",
    ("VocabParallelCrossEntropy", "log"): "loss.log",
    ("VocabParallelCrossEntropy", "add_peak"): "loss.add_peak",
    ("VocabParallelCrossEntropy", "token_loss"): "loss.token",
    ("VocabParallelCrossEntropy", "mean"): "loss.cross_entropy",
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


def apply_shard_strategies(network: Any, cfg) -> ShardPlan:
    """Attach the strategies of `shard_plan(network)` (Cell.shard with parameter plans; Primitive.shard where a
    cell owns a listed primitive). Call after set_parallel_context, before compiling."""
    import mindspore as ms
    from mindspore.parallel import Layout

    require_ascend(ms)
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
