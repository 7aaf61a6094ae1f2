"""What auto mode plans: every op of the token flow with the layout of its inputs and output, the data flow
between them, the small gathers MindSpore may add, and which op gives each parameter its layout.

Every op of the model's data flow (the token flow in README.md) has an `OpSpec`: the primitive, the layout of each
input and of the output in the mesh notation of autoparallel/mesh.py. From it come the numeric in-strategies of
`Primitive.shard` and MindSpore `Layout`s (autoparallel/layouts.py) and the checks of autoparallel/checks.py:
along DATA_FLOW each producer's output layout equals its consumer's input layout except for the intended
redistributions (the expert All-to-All and the group-wise All-Gather, each way). None of this has run on Ascend.

Dispatch and combine are written per token group ([G, tokens per group, ...], batched over G), the form in which
MindSpore can shard them: gathers (GatherD) over each group's buffer, as moe/dispatch.py computes them (a global
ScatterNd has no sharded implementation in MindSpore 2.10). The index operands are broadcast over h, and each
gathered operand carries one zero row (for empty slots and dropped tokens) that the symbols leave out.
Pure data: no MindSpore import.
"""
from __future__ import annotations

from dataclasses import dataclass

from locmoe_ms.autoparallel.mesh import TensorLayout, parse


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
    "embedding.gather": _op("Gather", ("V:mp h", "B:dp S"), "B:dp S h",
                            note="vocabulary parallel: each rank looks up its rows, AllReduce(mp)"),
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
    "dispatch.cast": _op("Cast", ("G:dp t h",), "G:dp t h", note="into compute_dtype, if not float32"),
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
    "combine.cast": _op("Cast", ("G:dp t h",), "G:dp t h", note="back to float32, if compute_dtype is not"),
    "combine.scale": _op("Mul", ("G:dp t h", "G:dp t one"), "G:dp t h"),
    "moe.residual": _op("Add", ("B:dp S h", "B:dp S h"), "B:dp S h"),
    # head
    "head.layernorm": _op("LayerNorm", ("B:dp S h", "h", "h"), "B:dp S h", axis=-1),
    "head.embedding_transpose": _op("Transpose", ("V:mp h",), "h V:mp", perm=(1, 0)),
    "head.logits": _op("MatMulExt", ("T:dp h", "h V:mp"), "T:dp V:mp", note="each rank's vocabulary columns"),
    # the cross-entropy over the split vocabulary (model/loss.py VocabParallelCrossEntropy): no rank gathers a row
    "loss.max": _op("ReduceMax", ("T:dp V:mp",), "T:dp one", note="row maximum: AllReduce(max, mp)"),
    "loss.shift": _op("Sub", ("T:dp V:mp", "T:dp one"), "T:dp V:mp", note="logits - their row maximum"),
    "loss.exp": _op("Activation", ("T:dp V:mp",), "T:dp V:mp"),
    "loss.sum": _op("ReduceSum", ("T:dp V:mp",), "T:dp one", note="sum of exponentials: AllReduce(mp)"),
    "loss.one_hot": _op("OneHot", ("T:dp V:mp", "", ""), "T:dp V:mp",
                        note="each rank's columns of the labels' one-hot; MindSpore's OneHot strategy names the "
                             "output's [T, V] and the scalar on/off values"),
    "loss.pick": _op("Mul", ("T:dp V:mp", "T:dp V:mp"), "T:dp V:mp"),
    "loss.pick_sum": _op("ReduceSum", ("T:dp V:mp",), "T:dp one", note="each token's label logit: AllReduce(mp)"),
    "loss.log": _op("Activation", ("T:dp one",), "T:dp one"),
    "loss.add_peak": _op("Add", ("T:dp one", "T:dp one"), "T:dp one", note="logsumexp of each token's logits"),
    "loss.token": _op("Sub", ("T:dp one", "T:dp one"), "T:dp one", note="each token's cross-entropy"),
    "loss.cross_entropy": _op("ReduceMean", ("T:dp one",), "", note="mean over the tokens: AllReduce(dp)"),
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
    *_chain("moe.layernorm", "dispatch.cast", "dispatch.pad"),
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
            "combine.cast", "combine.scale", "moe.residual"),
    Edge("router.top1", "dispatch.match"),
    Edge("router.top1", "combine.scale", 1),
    Edge("attention.residual", "moe.residual", 1),
    *_chain("ffn.residual", "head.layernorm", "head.logits", "loss.max"),
    Edge("head.logits", "loss.shift"),
    Edge("loss.max", "loss.shift", 1),
    *_chain("loss.shift", "loss.exp", "loss.sum", "loss.log", "loss.add_peak", "loss.token", "loss.cross_entropy"),
    Edge("loss.max", "loss.add_peak", 1),
    Edge("head.logits", "loss.pick"),
    Edge("loss.one_hot", "loss.pick", 1),
    Edge("loss.pick", "loss.pick_sum"),
    Edge("loss.pick_sum", "loss.token", 1),
    Edge("head.embedding_transpose", "head.logits", 1),
)

@dataclass(frozen=True)
class Gathered:
    """A redistribution the table accepts outside DATA_FLOW: sharding propagation gathers a small router statistic
    so that every rank computes a loss or a metric whole. Recognised in a compiled graph by collective, group and
    the gathered tensor's full shape (autoparallel/dryrun.py unlisted_redistributions)."""
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


def parameter_layout(name: str) -> TensorLayout | None:
    """The layout a parameter gets from the strategies, by name (None: no rule names it)."""
    for suffix, key, index in PARAMETER_OPS:
        if name.endswith(suffix):
            return OPS[key].inputs[index]
    return None
