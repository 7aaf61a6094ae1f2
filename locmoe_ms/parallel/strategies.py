"""Shard strategies for MindSpore auto-parallel on Ascend, as pure functions of (dp, mp, ep).

Devices form one mesh ("edp", "ep", "mp") of sizes (dp/ep, ep, mp), numbered row-major as MindSpore numbers a
device matrix: rank = (edp_index * ep + ep_index) * mp + mp_index. That is Topology's numbering: tensor-parallel
groups are mp consecutive ranks, token group j = rank // mp, expert block j % ep. Data parallel "dp" is the two
outer axes together.

Every op of the model's data flow (the token flow in README.md) has an `OpSpec`: the primitive, the layout of each input
and of the output, each dimension written as `symbol[:axes]` ("B:dp S h" = batch split over dp). From it come
the numeric in-strategies of `Primitive.shard` (`in_strategies`), MindSpore `Layout`s (`mindspore_layouts`, which
also pin the rank order, needed for the expert ops when dp/ep > 1 and ep > 1), and the checks of
`check_strategies`: every split divides its dimension and the device count, matmul operands agree, and along
DATA_FLOW each producer's output layout equals its consumer's input layout except for the intended
redistributions (the expert All-to-All and the group-wise All-Gather, each way), which it lists. `check_topology`
checks the placement equals Topology's, and `parameter_mismatches` that parameter layouts equal parallel/layout.py's.
None of this has run on Ascend.

Dispatch and combine are written per token group ([G, tokens per group, ...], batched over G), the form in which
MindSpore can shard them: gathers (GatherD) over each group's buffer, as moe/dispatch.py computes them (a global
ScatterNd has no sharded implementation in MindSpore 2.10). The index operands are broadcast over h, and each
gathered operand carries one zero row (for empty slots and dropped tokens) that the symbols leave out.
MindSpore itself is imported only by `mindspore_layouts`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from math import prod
from typing import Any

from locmoe_ms.config import check_parallel_sizes
from locmoe_ms.errors import UserInputError
from locmoe_ms.moe.capacity import group_capacity
from locmoe_ms.parallel.layout import ParamSplit, parameter_split

MESH_AXES = ("edp", "ep", "mp")
_ALIASES = {"dp": ("edp", "ep"), "edp": ("edp",), "ep": ("ep",), "mp": ("mp",)}

Dim = tuple[str, tuple[str, ...]]  # (size symbol, mesh axes splitting it, outermost first)
TensorLayout = tuple[Dim, ...]


@dataclass(frozen=True)
class ParallelSizes:
    dp: int
    mp: int
    ep: int

    @classmethod
    def from_config(cls, cfg) -> "ParallelSizes":
        par = cfg.parallel_config
        return cls(par.data_parallel, par.model_parallel, par.expert_parallel)

    @property
    def devices(self) -> int:
        return self.dp * self.mp

    @property
    def edp(self) -> int:
        """Expert data parallel: copies of every expert (dp / ep)."""
        return self.dp // self.ep

    def axis(self, name: str) -> int:
        return {"edp": self.edp, "ep": self.ep, "mp": self.mp}[name]

    def split(self, axes: tuple[str, ...]) -> int:
        return prod(self.axis(a) for a in axes)

    def coordinates(self, rank: int) -> dict[str, int]:
        """Mesh coordinates of a rank (MindSpore's row-major device matrix)."""
        return {"edp": rank // (self.ep * self.mp), "ep": rank // self.mp % self.ep, "mp": rank % self.mp}


def parse(spec: str) -> TensorLayout:
    """'B:dp S h:mp' -> (('B', ('edp', 'ep')), ('S', ()), ('h', ('mp',))); '' is a scalar."""
    dims = []
    for token in spec.split():
        sym, _, axes = token.partition(":")
        dims.append((sym, tuple(a for part in axes.split("+") if part for a in _ALIASES[part])))
    return tuple(dims)


@dataclass(frozen=True)
class OpSpec:
    primitive: str
    inputs: tuple[TensorLayout, ...]
    output: TensorLayout
    axis: int | None = None            # axis of input 0 the primitive needs whole (softmax, split, scan...)
    perm: tuple[int, ...] | None = None  # Transpose
    note: str = ""


def _op(primitive: str, inputs: tuple[str, ...], output: str, **kw) -> OpSpec:
    return OpSpec(primitive, tuple(parse(s) for s in inputs), parse(output), **kw)


_HEADS = (0, 2, 1, 3)
# Symbols: B batch, S sequence, h hidden, H heads, D head size, f FFN inner, V vocabulary, T = B*S,
# E experts, G token groups (= dp), t = T/G, C capacity per (group, expert), GC = G*C, EC = E*C, one = 1.
OPS: dict[str, OpSpec] = {
    "embedding.gather": _op("Gather", ("V h", "B:dp S"), "B:dp S h"),
    "embedding.position": _op("Add", ("B:dp S h", "S h"), "B:dp S h"),
    # attention (every block; the top query layer takes its query from query_layer.*)
    "attention.layernorm": _op("LayerNorm", ("B:dp S h", "h", "h"), "B:dp S h", axis=-1),
    "attention.query": _op("MatMulExt", ("B:dp S h", "h h:mp"), "B:dp S h:mp"),
    "attention.query.bias": _op("Add", ("B:dp S h:mp", "h:mp"), "B:dp S h:mp"),
    "attention.key": _op("MatMulExt", ("B:dp S h", "h h:mp"), "B:dp S h:mp"),
    "attention.key.bias": _op("Add", ("B:dp S h:mp", "h:mp"), "B:dp S h:mp"),
    "attention.value": _op("MatMulExt", ("B:dp S h", "h h:mp"), "B:dp S h:mp"),
    "attention.value.bias": _op("Add", ("B:dp S h:mp", "h:mp"), "B:dp S h:mp"),
    "attention.q_heads": _op("Transpose", ("B:dp S H:mp D",), "B:dp H:mp S D", perm=_HEADS),
    "attention.k_heads": _op("Transpose", ("B:dp S H:mp D",), "B:dp H:mp S D", perm=_HEADS),
    "attention.v_heads": _op("Transpose", ("B:dp S H:mp D",), "B:dp H:mp S D", perm=_HEADS),
    "attention.k_transpose": _op("Transpose", ("B:dp H:mp S D",), "B:dp H:mp D S", perm=(0, 1, 3, 2)),
    "attention.scores": _op("BatchMatMul", ("B:dp H:mp S D", "B:dp H:mp D S"), "B:dp H:mp S S"),
    "attention.scale": _op("Mul", ("B:dp H:mp S S", ""), "B:dp H:mp S S"),
    "attention.mask": _op("Add", ("B:dp H:mp S S", "S S"), "B:dp H:mp S S"),
    "attention.softmax": _op("Softmax", ("B:dp H:mp S S",), "B:dp H:mp S S", axis=-1),
    "attention.context": _op("BatchMatMul", ("B:dp H:mp S S", "B:dp H:mp S D"), "B:dp H:mp S D"),
    "attention.merge_heads": _op("Transpose", ("B:dp H:mp S D",), "B:dp S H:mp D", perm=_HEADS),
    "attention.out": _op("MatMulExt", ("B:dp S h:mp", "h:mp h"), "B:dp S h", note="row parallel: AllReduce(mp)"),
    "attention.out.bias": _op("Add", ("B:dp S h", "h"), "B:dp S h"),
    "attention.residual": _op("Add", ("B:dp S h", "B:dp S h"), "B:dp S h"),
    "query_layer.query": _op("MatMulExt", ("S h", "h h:mp"), "S h:mp"),
    "query_layer.query.bias": _op("Add", ("S h:mp", "h:mp"), "S h:mp"),
    "query_layer.broadcast": _op("Add", ("B:dp S h:mp", "S h:mp"), "B:dp S h:mp", note="zeros [B, S, h] + query"),
    # dense FFN
    "ffn.layernorm": _op("LayerNorm", ("B:dp S h", "h", "h"), "B:dp S h", axis=-1),
    "ffn.w_in": _op("MatMulExt", ("B:dp S h", "h f:mp"), "B:dp S f:mp"),
    "ffn.w_in.bias": _op("Add", ("B:dp S f:mp", "f:mp"), "B:dp S f:mp"),
    "ffn.act": _op("Activation", ("B:dp S f:mp",), "B:dp S f:mp"),
    "ffn.w_out": _op("MatMulExt", ("B:dp S f:mp", "f:mp h"), "B:dp S h", note="row parallel: AllReduce(mp)"),
    "ffn.w_out.bias": _op("Add", ("B:dp S h", "h"), "B:dp S h"),
    "ffn.residual": _op("Add", ("B:dp S h", "B:dp S h"), "B:dp S h"),
    # MoE: router
    "moe.layernorm": _op("LayerNorm", ("B:dp S h", "h", "h"), "B:dp S h", axis=-1),
    "gate": _op("MatMulExt", ("T:dp h", "h E"), "T:dp E",
                note="GrAP's fixed W (or its grouped-sum form) and Switch's W: replicated, rows split over dp"),
    "gate.bias": _op("Add", ("T:dp E", "E"), "T:dp E"),
    "gate.relu": _op("Activation", ("T:dp E",), "T:dp E"),
    "router.softmax": _op("Softmax", ("T:dp E",), "T:dp E", axis=-1),
    "router.top1": _op("ArgMaxWithValue", ("T:dp E",), "T:dp", axis=-1),
    "router.aux_mean": _op("ReduceMean", ("T:dp E",), "E", note="over tokens, global batch: AllReduce(dp)"),
    "router.locality_mean": _op("ReduceMean", ("G:dp t E",), "G:dp E", note="over each group's tokens"),
    # MoE: dispatch -> group-wise exchange -> experts -> exchange back -> combine
    "dispatch.one_hot": _op("OneHot", ("G:dp t",), "G:dp t E"),
    "dispatch.cumsum": _op("CumSum", ("G:dp t E",), "G:dp t E", axis=1, note="slots are per token group"),
    "dispatch.match": _op("Equal", ("G:dp one t", "one EC one"), "G:dp EC t",
                          note="which token fills each slot of its group (no gradient)"),
    "dispatch.pad": _op("Concat", ("G:dp t h", "G:dp one h"), "G:dp t h", note="a zero row for empty slots"),
    "dispatch": _op("GatherD", ("G:dp t h", "G:dp EC h"), "G:dp EC h",
                    note="per token group, batched over G: each slot gathers its token (an empty slot a zero row)"),
    "dispatch.transpose": _op("Transpose", ("G:dp E C h",), "E G:dp C h", perm=(1, 0, 2, 3)),
    # the group-wise exchange, on a token-group-major view [G, E, C, h] so that the numeric strategies order the
    # device matrix (edp, ep, mp) as Topology does (moe/layer.py GroupwiseLayouts)
    "exchange.to_groups": _op("Transpose", ("E G:dp C h",), "G:dp E C h", perm=(1, 0, 2, 3)),
    "exchange.send_slice": _op("StridedSlice", ("G:dp E C:mp h",), "G:dp E C:mp h",
                               note="each tensor-parallel rank sends 1/mp of the slots"),
    "exchange.all_to_all": _op("StridedSlice", ("G:edp E:ep C:mp h",), "G:edp E:ep C:mp h"),
    "exchange.all_gather": _op("StridedSlice", ("G:edp E:ep C h",), "G:edp E:ep C h"),
    "exchange.to_experts": _op("Transpose", ("G:edp E:ep C h",), "E:ep G:edp C h", perm=(1, 0, 2, 3)),
    "experts.w_in": _op("BatchMatMul", ("E:ep GC:edp h", "E:ep h f:mp"), "E:ep GC:edp f:mp"),
    "experts.b_in": _op("Add", ("E:ep GC:edp f:mp", "E:ep one f:mp"), "E:ep GC:edp f:mp"),
    "experts.act": _op("Activation", ("E:ep GC:edp f:mp",), "E:ep GC:edp f:mp"),
    # the exact GeLU's other primitives (moe/experts.py ExpertActivation): x / sqrt(2), + 1 and * 0.5; x * (1 + erf)
    "experts.act.scalar": _op("Mul", ("E:ep GC:edp f:mp", ""), "E:ep GC:edp f:mp"),
    "experts.act.product": _op("Mul", ("E:ep GC:edp f:mp", "E:ep GC:edp f:mp"), "E:ep GC:edp f:mp"),
    "experts.w_out": _op("BatchMatMul", ("E:ep GC:edp f:mp", "E:ep f:mp h"), "E:ep GC:edp h",
                         note="row parallel: AllReduce(mp)"),
    "experts.b_out": _op("Add", ("E:ep GC:edp h", "E:ep one h"), "E:ep GC:edp h"),
    "exchange.from_experts": _op("Transpose", ("E:ep G:edp C h",), "G:edp E:ep C h", perm=(1, 0, 2, 3)),
    "exchange.return_slice": _op("StridedSlice", ("G:edp E:ep C:mp h",), "G:edp E:ep C:mp h"),
    "exchange.return_all_to_all": _op("StridedSlice", ("G:dp E C:mp h",), "G:dp E C:mp h"),
    "exchange.return_all_gather": _op("StridedSlice", ("G:dp E C h",), "G:dp E C h"),
    "exchange.back": _op("Transpose", ("G:dp E C h",), "E G:dp C h", perm=(1, 0, 2, 3)),
    "combine.transpose": _op("Transpose", ("E G:dp C h",), "G:dp E C h", perm=(1, 0, 2, 3)),
    "combine.pad": _op("Concat", ("G:dp EC h", "G:dp one h"), "G:dp EC h", note="a zero row for dropped tokens"),
    "combine": _op("GatherD", ("G:dp EC h", "G:dp t h"), "G:dp t h",
                   note="per token group, batched over G: each token gathers its slot (a dropped one a zero row)"),
    "combine.scale": _op("Mul", ("G:dp t h", "G:dp t one"), "G:dp t h"),
    "moe.residual": _op("Add", ("B:dp S h", "B:dp S h"), "B:dp S h"),
    # head
    "head.layernorm": _op("LayerNorm", ("B:dp S h", "h", "h"), "B:dp S h", axis=-1),
    "head.embedding_transpose": _op("Transpose", ("V h",), "h V", perm=(1, 0)),
    "head.logits": _op("MatMulExt", ("T:dp h", "h V"), "T:dp V"),
    "loss.shift": _op("Sub", ("T:dp V", "T:dp one"), "T:dp V", note="logits - their row maximum"),
    "loss.pick": _op("GatherD", ("T:dp V", "T:dp one"), "T:dp one", note="each token's label logit"),
    "loss.cross_entropy": _op("CrossEntropy", ("T:dp V", "T:dp"), "", note="mean over dp: AllReduce(dp)"),
}


@dataclass(frozen=True)
class Edge:
    producer: str
    consumer: str
    index: int = 0                 # consumer input
    collective: str | None = None  # intended redistribution: "all_gather:X", "all_to_all:X" or "slice:X" (free)


def _chain(*keys: str) -> tuple[Edge, ...]:
    return tuple(Edge(a, b) for a, b in zip(keys, keys[1:]))


# Producer -> consumer pairs (tensors passed directly or through a Reshape); the residual stream enters a block
# from the embedding, a dense block or a sparse block.
DATA_FLOW: tuple[Edge, ...] = (
    *_chain("embedding.gather", "embedding.position", "attention.layernorm", "attention.query",
            "attention.query.bias", "attention.q_heads", "attention.scores", "attention.scale", "attention.mask",
            "attention.softmax", "attention.context", "attention.merge_heads", "attention.out",
            "attention.out.bias", "attention.residual"),
    *_chain("attention.layernorm", "attention.key", "attention.key.bias", "attention.k_heads",
            "attention.k_transpose"),
    Edge("attention.k_transpose", "attention.scores", 1),
    *_chain("attention.layernorm", "attention.value", "attention.value.bias", "attention.v_heads"),
    Edge("attention.v_heads", "attention.context", 1),
    Edge("query_layer.query", "query_layer.query.bias"),
    Edge("query_layer.query.bias", "query_layer.broadcast", 1),
    Edge("query_layer.broadcast", "attention.q_heads"),
    *(Edge(src, dst, i) for src in ("embedding.position", "ffn.residual", "moe.residual")
      for dst, i in (("attention.layernorm", 0), ("attention.residual", 1))),
    *_chain("attention.residual", "ffn.layernorm", "ffn.w_in", "ffn.w_in.bias", "ffn.act", "ffn.w_out",
            "ffn.w_out.bias", "ffn.residual"),
    Edge("attention.residual", "ffn.residual", 1),
    *_chain("attention.residual", "moe.layernorm", "gate", "gate.bias", "gate.relu", "router.softmax",
            "router.top1", "dispatch.one_hot", "dispatch.cumsum"),
    Edge("gate.bias", "router.softmax"),
    Edge("router.softmax", "router.aux_mean"),
    Edge("router.softmax", "router.locality_mean"),
    Edge("moe.layernorm", "dispatch.pad"),
    Edge("dispatch.pad", "dispatch"),
    Edge("dispatch", "dispatch.transpose"),
    Edge("dispatch.transpose", "exchange.to_groups"),
    Edge("exchange.to_groups", "exchange.send_slice", 0, "slice:mp"),
    Edge("exchange.send_slice", "exchange.all_to_all", 0, "all_to_all:ep"),
    Edge("exchange.all_to_all", "exchange.all_gather", 0, "all_gather:mp"),
    *_chain("exchange.all_gather", "exchange.to_experts", "experts.w_in", "experts.b_in", "experts.act",
            "experts.w_out", "experts.b_out", "exchange.from_experts"),
    Edge("exchange.from_experts", "exchange.return_slice", 0, "slice:mp"),
    Edge("exchange.return_slice", "exchange.return_all_to_all", 0, "all_to_all:ep"),
    Edge("exchange.return_all_to_all", "exchange.return_all_gather", 0, "all_gather:mp"),
    *_chain("exchange.return_all_gather", "exchange.back", "combine.transpose", "combine.pad", "combine",
            "combine.scale", "moe.residual"),
    Edge("router.top1", "dispatch.match"),
    Edge("router.top1", "combine.scale", 1),
    Edge("attention.residual", "moe.residual", 1),
    *_chain("ffn.residual", "head.layernorm", "head.logits", "loss.cross_entropy"),
    Edge("head.logits", "loss.shift"),
    Edge("head.logits", "loss.pick"),
    Edge("head.embedding_transpose", "head.logits", 1),
)

@dataclass(frozen=True)
class Gathered:
    """A redistribution the table accepts outside DATA_FLOW: sharding propagation gathers a small router statistic
    so that every rank computes a loss or a metric whole. Recognised in a compiled graph by collective, group and
    the gathered tensor's full shape (parallel/dryrun.py unlisted_redistributions)."""
    collective: str   # AllGather
    group: str        # "dp": rank's data-parallel group; "all": every device
    shape: str        # symbols of the gathered tensor's full shape
    reason: str


# Each is at most 4 bytes per token or a few [G, E] floats: next to the exchange's h values per token (1/h of one
# activation gather). Pinning them needs owned primitives in moe/losses.py and moe/layer.py.
GATHERED: tuple[Gathered, ...] = (
    Gathered("AllGather", "dp", "T", "auxiliary loss: OneHot of the expert index runs replicated (counts f_i); "
                                     "local share: the index looks up the [G*E] locality mask replicated; bias "
                                     "balancing reuses that count"),
    Gathered("AllGather", "all", "E", "auxiliary loss: f_i and P_i / T, split over every device by propagation, "
                                      "gathered for their product"),
    Gathered("AllGather", "dp", "G E", "locality loss: each token group's mean probabilities, gathered for the KL "
                                       "against the [G, E] target"),
)


def gathered_shapes(dims: dict[str, int]) -> list[tuple[str, str, tuple[int, ...], str]]:
    """GATHERED at a config's sizes: (collective, group, full shape, reason)."""
    return [(g.collective, g.group, tuple(dims[sym] for sym in g.shape.split()), g.reason) for g in GATHERED]


# Parameter name suffix -> (op, input) whose layout the parameter has; first match wins.
PARAMETER_OPS: tuple[tuple[str, str, int], ...] = (
    (".moe.experts.w_in", "experts.w_in", 1),
    (".moe.experts.b_in", "experts.b_in", 1),
    (".moe.experts.w_out", "experts.w_out", 1),
    (".moe.experts.b_out", "experts.b_out", 1),
    (".router.gate.weight", "gate", 1),
    (".router.gate.bias", "gate.bias", 1),
    ("query_layer.attention.query.weight", "query_layer.query", 1),
    ("query_layer.attention.query.bias", "query_layer.query.bias", 1),
    (".attention.query.weight", "attention.query", 1),
    (".attention.query.bias", "attention.query.bias", 1),
    (".attention.key.weight", "attention.key", 1),
    (".attention.key.bias", "attention.key.bias", 1),
    (".attention.value.weight", "attention.value", 1),
    (".attention.value.bias", "attention.value.bias", 1),
    (".attention.out.weight", "attention.out", 1),
    (".attention.out.bias", "attention.out.bias", 1),
    (".ffn.w_in.weight", "ffn.w_in", 1),
    (".ffn.w_in.bias", "ffn.w_in.bias", 1),
    (".ffn.w_out.weight", "ffn.w_out", 1),
    (".ffn.w_out.bias", "ffn.w_out.bias", 1),
    (".ln_attention.gamma", "attention.layernorm", 1),
    (".ln_attention.beta", "attention.layernorm", 2),
    (".ln_ffn.gamma", "ffn.layernorm", 1),
    (".ln_ffn.beta", "ffn.layernorm", 2),
    (".ln_moe.gamma", "moe.layernorm", 1),
    (".ln_moe.beta", "moe.layernorm", 2),
    ("final_norm.gamma", "head.layernorm", 1),
    ("final_norm.beta", "head.layernorm", 2),
    ("word_embedding", "embedding.gather", 0),
    ("position_embedding", "embedding.position", 1),
    ("top_query_embedding", "query_layer.query", 0),
)


# ---------------------------------------------------------------- numeric forms

def in_strategies(sizes: ParallelSizes) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Op -> the `in_strategy` of Primitive.shard (splits per input dimension). As tuples, MindSpore orders the
    device matrix by dimension, so for the expert ops (E:ep before GC:edp) they put ep outermost: when both
    dp/ep > 1 and ep > 1 only `mindspore_layouts` keeps Topology's placement."""
    return {key: tuple(_splits(sizes, t) for t in spec.inputs) for key, spec in OPS.items()}


def output_strategies(sizes: ParallelSizes) -> dict[str, tuple[int, ...]]:
    """Op -> splits of its output. No op needs MindSpore's out_strategy: row-parallel outputs use the default
    AllReduce; these are for checks and documentation."""
    return {key: _splits(sizes, spec.output) for key, spec in OPS.items()}


def _splits(sizes: ParallelSizes, layout: TensorLayout) -> tuple[int, ...]:
    return tuple(sizes.split(axes) for _, axes in layout)


def parameter_layout(name: str) -> TensorLayout | None:
    """The layout a parameter gets from the strategies, by name (None: no rule names it)."""
    for suffix, key, index in PARAMETER_OPS:
        if name.endswith(suffix):
            return OPS[key].inputs[index]
    return None


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


# ---------------------------------------------------------------- validation

def tensor_sizes(cfg, sizes: ParallelSizes) -> dict[str, int]:
    """Size of every dimension symbol of OPS for a config (capacity as MoELayer computes it)."""
    m, moe = cfg.model, cfg.moe_config
    batch, tokens = cfg.train.batch_size, cfg.train.batch_size * m.seq_length
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
    axes = _ALIASES[name]
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
            if devices % prod(_splits(sizes, layout)):
                report.problems.append(f"{where}: product of splits {prod(_splits(sizes, layout))} does not "
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
            report.problems.append(f"{name}: produced as {_show(out)}, consumed as {_show(inp)}")
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
            errors.append(f"output {_show(out)} does not follow from the inputs")
    elif spec.primitive == "Transpose":
        if axes(out) != tuple(axes(ins[0])[p] for p in spec.perm):
            errors.append(f"output {_show(out)} is not the permuted input")
    elif spec.primitive in ("Add", "Mul", "Activation", "Softmax", "LayerNorm", "StridedSlice", "CumSum"):
        for other in ins[1:]:
            for (sym, split), (_, base) in zip(other, ins[0][-len(other):] if other else ()):
                if split != (() if sym == "one" else base):
                    errors.append(f"broadcast operand {_show(other)} split unlike {_show(ins[0])}")
                    break
        if axes(out) != axes(ins[0]):
            errors.append(f"output {_show(out)} differs from input {_show(ins[0])}")
    if spec.axis is not None and ins[0][spec.axis][1]:
        errors.append(f"axis {spec.axis} is split but {spec.primitive} needs it whole")
    return errors


def _show(layout: TensorLayout) -> str:
    return " ".join(sym + (":" + "+".join(axes) if axes else "") for sym, axes in layout) or "scalar"


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


def strategy_table(sizes: ParallelSizes, keys: tuple[str, ...] | None = None) -> str:
    """Human-readable table of op -> in_strategy -> output splits."""
    ins, outs = in_strategies(sizes), output_strategies(sizes)
    keys = keys or tuple(OPS)
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {OPS[k].primitive:<15} {ins[k]} -> {outs[k]}" for k in keys)
