"""Per-device memory plan of a config: what one rank holds in HBM during a training step.

Static part (weights, gradients, optimizer moments), tensor by tensor, from the splits the run applies:
- auto mode: each parameter's layout in the op table (what autoparallel/apply.py attaches) and, with
  `parallel_config.optimizer_shard`, the parallel optimizer's split (autoparallel/slices.py, the one place of both);
- explicit mode: the rank's share of parallel/layout.py (experts split over expert parallel, the rest whole; one
  process, communicator local, holds the whole model).
Weights, gradients and AdamWeightDecay's two moments are float32, as the model keeps its parameters. Gradients are
counted at the stored shape; with the optimizer shard the unsharded gradient of one parameter exists until its
ReduceScatter, counted in the workspace as the largest such slice.

Activations are a formula (`activation_terms`), per device, float32 (every matmul returns float32) except the
expert path, which holds `compute_dtype` (parallel/exchange.py VALUE_BYTES) from the cast before dispatch to the
combine (marked [c] below), with
t = tokens of the rank's token group in one micro-batch (batch / micro_batches / dp * seq), b = its sequences, mp,
ep, the capacity C per (group,
expert), heads H, hidden h, FFN f, experts E, vocabulary V (V / mp when the vocabulary is split):
  block input kept for the backward      t*h per block (num_layers + the query layer)
  attention working set                  t*h (LayerNorm) + 6 t*h/mp (q, k, v and their head-major copies)
                                         + 2 b*(H/mp)*S^2 (scores, probabilities) + 2 t*h/mp (context, merged)
                                         + t*h (projection)
  dense FFN working set                  t*h (LayerNorm) + 2 t*f/mp (w_in, activation) + t*h (w_out)
  MoE working set                        t*h (LayerNorm) + 2 t*E (router logits, probabilities) + t*h (combine)
                                     [c] + t*h (the cast input) + E*C*h (dispatch)
                                     [c] + E*C*h/mp + E*C*h (All-to-All, All-Gather)
                                     [c] + 2 E*C*f/mp (experts' w_in, activation) + E*C*h (w_out)
                                     [c] + E*C*h/mp + E*C*h (the return)
  logits and the cross-entropy           3 t*V (logits, their shifted exponentials, the softmax of the backward)
With model.recompute the backward keeps the block inputs and rebuilds one block's working set at a time (the
largest); without it every block's working set is kept. Explicit mode: the same terms with mp = 1 for the dense
parts (every rank of a tensor-parallel group computes whole) and the exchange's buffers at its own shapes.
Communication: one HCCL buffer (the hardware file's hccl_buffer_mb, CANN's HCCL_BUFFSIZE) per communication group
the rank joins. None of this has been measured on an NPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from pathlib import Path

from locmoe_ms.autoparallel.mesh import ParallelSizes
from locmoe_ms.autoparallel.slices import ParameterSlice, parameter_slice
from locmoe_ms.autoparallel.table import OPS
from locmoe_ms.capacity import group_capacity
from locmoe_ms.config import Config
from locmoe_ms.parallel.exchange import VALUE_BYTES
from locmoe_ms.parallel.layout import parameter_split

FLOAT32 = 4
MOMENTS = ("adam_m", "adam_v")          # AdamWeightDecay's state per trainable parameter


def _explicit_slice(name: str, full: tuple[int, ...], ep: int) -> ParameterSlice:
    axis = parameter_split(name).expert_axis
    shape = tuple(n // ep if i == axis else n for i, n in enumerate(full))
    return ParameterSlice(name, full, shape, shape, "E/ep" if axis is not None and ep > 1 else "whole", (), 1)


def parameter_slices(cfg: Config, shapes: dict[str, tuple[int, ...]]) -> list[ParameterSlice]:
    """Every model parameter (`shapes`: name -> full shape) as one device of cfg's job holds it."""
    par = cfg.parallel_config
    if par.mode == "auto":
        sizes = ParallelSizes.from_config(cfg)
        return [parameter_slice(n, s, sizes, par.optimizer_shard) for n, s in shapes.items()]
    ep = par.expert_parallel if par.communicator != "local" else 1  # one process holds every expert
    return [_explicit_slice(n, s, ep) for n, s in shapes.items()]


@dataclass
class StaticBytes:
    weights: int = 0
    gradients: int = 0
    moments: int = 0
    unsharded_gradient: int = 0  # the largest gradient slice waiting for its ReduceScatter
    tensors: list[ParameterSlice] = field(default_factory=list)


def static_bytes(slices: list[ParameterSlice], trainable: set[str]) -> StaticBytes:
    """Weights, gradients and moments (float32) of the slices; gradients and moments for `trainable` ones only."""
    out = StaticBytes(tensors=slices)
    for s in slices:
        size = prod(s.stored) * FLOAT32
        out.weights += size
        if s.name in trainable:
            out.gradients += size
            out.moments += len(MOMENTS) * size
            if s.opt_group > 1:
                out.unsharded_gradient = max(out.unsharded_gradient, prod(s.model_slice) * FLOAT32)
    return out


def activation_terms(cfg: Config) -> dict[str, int]:
    """Activation bytes per device by the module docstring's formulas: the stored block inputs, the working set of
    the (largest) block being recomputed, or every block's without recompute, and the logits."""
    m, moe, par = cfg.model, cfg.moe_config, cfg.parallel_config
    auto = par.mode == "auto"
    dp, ep = par.data_parallel, par.expert_parallel
    mp = par.model_parallel if auto else 1
    b, s, h, f, e = cfg.micro_batch_size // dp, m.seq_length, m.hidden_size, m.ffn_hidden_size, moe.expert_num
    t = b * s
    c = group_capacity(t, moe, ep)
    vocab = m.vocab_size // (_vocabulary_split(ParallelSizes.from_config(cfg)) if auto else 1)
    attention = t * h + 6 * t * h // mp + 2 * b * (m.num_heads // mp) * s * s + 2 * t * h // mp + t * h
    dense = t * h + 2 * t * f // mp + t * h
    tp = par.model_parallel  # the exchange slices the capacity over the tensor-parallel group in both modes
    moving = t * h + e * c * h + e * c * h // tp + e * c * h + 2 * e * c * f // mp + e * c * h \
        + e * c * h // tp + e * c * h
    sparse = (t * h + 2 * t * e + t * h) * FLOAT32 + moving * VALUE_BYTES[m.compute_dtype]
    n_sparse = len(m.sparse_layers)
    n_dense = m.num_layers - n_sparse + 1  # and the query layer
    attention, dense = attention * FLOAT32, dense * FLOAT32
    blocks = [attention + dense] * n_dense + [attention + sparse] * n_sparse
    if m.recompute:
        kept, working = (m.num_layers + 1) * t * h * FLOAT32, max(blocks)
    else:
        kept, working = sum(blocks), 0
    return {"block inputs": kept, "block working set": working, "logits and cross-entropy": 3 * t * vocab * FLOAT32}


def _vocabulary_split(sizes: ParallelSizes) -> int:
    """Ways the op table splits the logits' vocabulary axis."""
    return prod(sizes.split(axes) for sym, axes in OPS["head.logits"].output if sym == "V")


def communication_groups(cfg: Config, slices: list[ParameterSlice]) -> int:
    """Communication groups of more than one device a rank joins (each takes 2 HCCL buffers): auto mode's tensor-,
    expert- and data-parallel groups, the world and every parameter's replica group (its gradient mirror, and
    the optimizer shard's group); explicit mode's Topology groups."""
    par = cfg.parallel_config
    if par.mode == "auto":
        sizes = ParallelSizes.from_config(cfg)
        axes = {("mp",), ("ep",), ("edp", "ep"), ("edp", "ep", "mp")} | {s.replica_axes for s in slices}
        return len({tuple(a for a in group if sizes.axis(a) > 1) for group in axes} - {()})
    from locmoe_ms.parallel.topology import Topology

    topo = Topology.from_config(cfg)
    groups = {topo.tensor_group(0), topo.expert_group(0), topo.data_group(0), topo.expert_replica_group(0),
              tuple(range(topo.world))}
    return len({g for g in groups if len(g) > 1})


@dataclass
class MemoryPlan:
    """One device's bytes by part, against the hardware's usable HBM."""
    name: str
    config: Config
    static: StaticBytes
    activations: dict[str, int]
    communication: dict[str, int]
    hbm: float
    usable: float
    hardware: str

    @property
    def total(self) -> int:
        return self.static.weights + self.static.gradients + self.static.moments + self.static.unsharded_gradient \
            + sum(self.activations.values()) + sum(self.communication.values())

    def parts_gb(self) -> dict[str, float]:
        return {"weights": self.static.weights / 1e9, "gradients": self.static.gradients / 1e9,
                "optimizer": self.static.moments / 1e9,
                "activations": (sum(self.activations.values()) + self.static.unsharded_gradient) / 1e9,
                "communication": sum(self.communication.values()) / 1e9}


def memory_plan(cfg: Config, hardware, name: str = "config", shapes=None) -> MemoryPlan:
    """The plan of one device of cfg's job (every device of a job holds the same bytes: splits are uniform).
    `shapes`: (name -> full shape, trainable names), model_shapes(cfg) when not given."""
    if shapes is None:
        from locmoe_ms.model.network import model_shapes  # MindSpore: only when the plan is asked for
        shapes = model_shapes(cfg)
    full, trainable = shapes
    slices = parameter_slices(cfg, full)
    static = static_bytes(slices, trainable)
    groups = communication_groups(cfg, slices)
    comm = {f"HCCL buffers ({groups} groups x 2 x {hardware.hccl_buffer_bytes / 2 ** 20:.0f} MB)":
            int(groups * 2 * hardware.hccl_buffer_bytes)} if cfg.parallel_config.communicator == "hccl" else {}
    return MemoryPlan(name, cfg, static, activation_terms(cfg), comm, hardware.hbm_bytes,
                      hardware.hbm_bytes * hardware.usable_share, hardware.path)


def render(plan: MemoryPlan, cfg: Config, rank: int | None = None) -> str:
    """The plan as a table: each tensor group's bytes with its dtype and split, then the activations, the
    communication and the total against the usable HBM."""
    rows: dict[tuple[str, str], list[int]] = {}
    for s in plan.static.tensors:
        key = (_kind(s.name), s.split)
        entry = rows.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += prod(s.stored) * FLOAT32
    par = cfg.parallel_config
    who = "every device" if rank is None else f"rank {rank}"
    lines = [f"memory plan of {plan.name}, {who} of {cfg.virtual_devices} (the splits are uniform: every rank holds "
             f"the same bytes; mode {par.mode}, dp "
             f"{par.data_parallel}, mp {par.model_parallel}, ep {par.expert_parallel}, optimizer_shard "
             f"{str(par.optimizer_shard).lower()}, recompute {str(cfg.model.recompute).lower()}); GB = 1e9 bytes",
             "weights (float32; gradients and each of AdamWeightDecay's 2 moments have the same shape for trainable "
             "ones):"]
    for (kind, split), (count, size) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {kind:<22} {count:>4} tensors  {split:<24} {size / 1e9:8.3f} GB")
    st = plan.static
    lines += [f"  weights {st.weights / 1e9:.3f} GB, gradients {st.gradients / 1e9:.3f} GB, optimizer moments "
              f"{st.moments / 1e9:.3f} GB"]
    moving = "" if cfg.model.compute_dtype == "float32" else f", the expert path in {cfg.model.compute_dtype}"
    lines.append(f"activations (float32{moving}; formulas of locmoe_ms/planning/memory.py):")
    for key, size in plan.activations.items():
        lines.append(f"  {key:<46} {size / 1e9:8.3f} GB")
    if st.unsharded_gradient:
        lines.append(f"  {'largest gradient before its ReduceScatter':<46} {st.unsharded_gradient / 1e9:8.3f} GB")
    for key, size in plan.communication.items():
        lines.append(f"communication: {key:<31} {size / 1e9:8.3f} GB")
    lines.append(f"total {plan.total / 1e9:.2f} GB of {plan.usable / 1e9:.2f} usable ({plan.hbm / 1e9:.0f} GB HBM, "
                 f"{Path(plan.hardware).name}): {'fits' if plan.total <= plan.usable else 'does not fit'}, margin "
                 f"{(plan.usable - plan.total) / 1e9:+.2f} GB")
    return "\n".join(lines)


def _kind(name: str) -> str:
    for key in ("moe.experts", "router", "word_embedding", "position_embedding", "top_query_embedding", "ln_",
                "final_norm", "attention", "ffn"):
        if key in name:
            return {"ln_": "layernorm", "final_norm": "layernorm", "moe.experts": "experts"}.get(key, key)
    return "other"


def fits_or_error(plan: MemoryPlan, path: str, hardware_name: str) -> str | None:
    """None when the plan fits the usable HBM, else the one-line refusal naming what to change."""
    if plan.total <= plan.usable:
        return None
    parts = ", ".join(f"{k} {v:.1f}" for k, v in plan.parts_gb().items() if v >= 0.05)
    return (f"{path}: needs {plan.total / 1e9:.1f} GB per device ({parts}) of {plan.usable / 1e9:.1f} usable on "
            f"{hardware_name}; {remedies(plan.config)}")


def remedies(cfg: Config) -> str:
    """What would lower the plan, among the settings the config has not used yet."""
    out = []
    if cfg.parallel_config.mode == "auto" and not cfg.parallel_config.optimizer_shard:
        out.append("parallel_config.optimizer_shard=true")
    if not cfg.model.recompute:
        out.append("model.recompute=true")
    out += ["a smaller train.batch_size", "a larger parallel_config.model_parallel"]
    return "set " + ", ".join(out[:-1]) + " or " + out[-1]
