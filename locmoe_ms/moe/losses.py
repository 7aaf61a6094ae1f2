"""Router losses: the auxiliary load-balance loss and LocMoE's locality loss."""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops


def expert_load(expert_index: Tensor, experts: int, global_sum: nn.Cell | None = None) -> Tensor:
    """Tokens per expert [n] (float32) of the batch, or of the global batch when `global_sum` adds the per-expert
    counts of all ranks that hold distinct tokens. The auxiliary loss's f_i and bias balancing's load."""
    counts = ops.one_hot(expert_index, experts, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)).sum(axis=0)
    return counts if global_sum is None else global_sum(counts)


def auxiliary_loss(probs: Tensor, load: Tensor, factor: float, global_sum: nn.Cell | None = None,
                   global_tokens: int | None = None) -> Tensor:
    """alpha * n * sum_i f_i * P_i over the whole (global) batch; f_i = load_i / tokens carries no gradient.

    `load` is expert_load's count, of the global batch when ranks hold parts of it: then `global_sum` adds the
    ranks' per-expert probability sums too and `global_tokens` is the global token count.
    """
    experts = probs.shape[-1]
    prob_sums = probs.sum(axis=0)
    if global_sum is not None:
        prob_sums = global_sum(prob_sums)
    total = probs.shape[0] if global_tokens is None else global_tokens
    fraction = ops.stop_gradient(load.astype(probs.dtype) / total)
    return factor * experts * (fraction * (prob_sums / total)).sum()


def locality_loss(probs: Tensor, target: Tensor, has_local: Tensor, factor: float) -> Tensor:
    """mu * mean_g has_local_g * KL(P_g || D_g), P_g the mean router probabilities of token group g.

    probs: [tokens, experts], tokens ordered by group; target: [groups, experts]; has_local: [groups].
    """
    groups, experts = target.shape
    mean_probs = probs.reshape(groups, -1, experts).mean(axis=1)
    kl = (mean_probs * (ops.log(mean_probs + 1e-9) - ops.log(target))).sum(axis=1)
    return factor * (kl * has_local).mean()


def z_loss(logits: Tensor, factor: float, global_sum: nn.Cell | None = None, global_tokens: int | None = None) -> Tensor:
    """Router z-loss (ST-MoE, Zoph et al. 2022): factor * mean over the (global) batch of logsumexp(logits)^2,
    which keeps the gate's logits small."""
    total_sq = (ops.logsumexp(logits, dim=-1) ** 2).sum()
    if global_sum is not None:
        total_sq = global_sum(total_sq)
    total = logits.shape[0] if global_tokens is None else global_tokens
    return factor * total_sq / total
