"""FLOPs and parameter counts of one training step of PanGuSigmaLM, op by op, as the code runs them.

Notation: T = B*S tokens of the global batch, h hidden, f FFN hidden, E experts, V vocabulary, G token groups,
C slots per (token group, expert) (capacity.group_capacity). A matmul [m, k] x [k, n] is 2*m*k*n FLOPs; its
backward is twice that (input and weight gradients), except GrAP's constant W (input gradient only).
Elementwise ops (LayerNorm, softmax, GeLU, masks, residuals) are left out: on Ascend they run on the vector
unit beside the matmuls and are a few percent of them at h = 5120.

Forward, global step:
  attention   8*T*h^2 (q, k, v, out) + 4*T*S*h (scores, context; the causal mask is applied, not skipped)
  dense FFN   4*T*h*f
  experts     4*h*f * E*G*C*k (every capacity slot, filled or not: static shapes; k micro-batches)
  gate        GrAP (locmoe) and dense (switch) both 2*T*h*E as one matmul; hash and rre none
  LM head     2*T*h*V (tied embedding)
Recompute (model.recompute) runs every block's forward again in the backward pass, not the head.
"""
from __future__ import annotations

from dataclasses import dataclass

from locmoe_ms.config import ROUTER_GATES, Config
from locmoe_ms.capacity import group_capacity


@dataclass(frozen=True)
class OpFlops:
    forward: float
    backward: float
    recomputed: bool  # runs a second forward when model.recompute is on


def capacity_of(cfg: Config) -> int:
    """Slots per (token group, expert) for one micro-batch of the global batch (train.micro_batches; the whole
    batch when 1), as MoELayer fixes them."""
    par = cfg.parallel_config
    groups = par.nodes * par.devices_per_node // par.model_parallel
    return group_capacity(cfg.micro_batch_size * cfg.model.seq_length // groups, cfg.moe_config, par.expert_parallel)


def step_ops(cfg: Config) -> dict[str, OpFlops]:
    """Global FLOPs of one step per op family (every layer of the family summed)."""
    m, moe, par = cfg.model, cfg.moe_config, cfg.parallel_config
    t, s, h, f, e, v = cfg.train.batch_size * m.seq_length, m.seq_length, m.hidden_size, m.ffn_hidden_size, \
        moe.expert_num, m.vocab_size
    sparse = len(m.sparse_layers)
    dense = m.num_layers - sparse + 1  # dense blocks and the top query layer
    blocks = m.num_layers + 1
    groups = par.nodes * par.devices_per_node // par.model_parallel
    slots = e * groups * capacity_of(cfg) * cfg.train.micro_batches  # every micro-batch fills its own slots
    gate = ROUTER_GATES[moe.router]
    gate_forward = 2.0 * t * h * e * sparse if gate else 0.0
    return {
        "attention": OpFlops(blocks * (8.0 * t * h * h + 4.0 * t * s * h),
                             2 * blocks * (8.0 * t * h * h + 4.0 * t * s * h), True),
        "dense_ffn": OpFlops(dense * 4.0 * t * h * f, dense * 8.0 * t * h * f, True),
        "experts": OpFlops(sparse * 4.0 * h * f * slots, sparse * 8.0 * h * f * slots, True),
        "gate": OpFlops(gate_forward, gate_forward * (1 if gate == "grap" else 2), True),
        "lm_head": OpFlops(2.0 * t * h * v, 4.0 * t * h * v, False),
    }


def op_total(op: OpFlops, recompute: bool) -> float:
    return op.forward * (2 if recompute and op.recomputed else 1) + op.backward


def step_flops(cfg: Config) -> float:
    """Global FLOPs of one training step."""
    return sum(op_total(op, cfg.model.recompute) for op in step_ops(cfg).values())


def parameter_counts(cfg: Config) -> tuple[int, int]:
    """(dense parameters, parameters of all experts) of the model, as its Cells hold them."""
    m, moe = cfg.model, cfg.moe_config
    h, f, e = m.hidden_size, m.ffn_hidden_size, moe.expert_num
    sparse = len(m.sparse_layers)
    attention = 4 * (h * h + h) + 4 * h                 # q, k, v, out with biases; two LayerNorms
    ffn = h * f + f + f * h + h
    gate = {"grap": e, "dense": h * e, None: 0}[ROUTER_GATES[moe.router]]
    dense = (m.num_layers - sparse + 1) * (attention + ffn) + sparse * (attention + gate) \
        + m.vocab_size * h + 2 * m.seq_length * h + 2 * h  # embeddings, position and top query, final LayerNorm
    return dense, sparse * e * (h * f + f + f * h + h)
