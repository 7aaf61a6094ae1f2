"""Router losses: the auxiliary load-balance loss and LocMoE's locality loss."""
from __future__ import annotations

from mindspore import Tensor, ops


def auxiliary_loss(probs: Tensor, expert_index: Tensor, factor: float) -> Tensor:
    """alpha * n * sum_i f_i * P_i over the whole (global) batch; f_i carries no gradient."""
    experts = probs.shape[-1]
    counts = ops.one_hot(expert_index, experts, Tensor(1.0, probs.dtype), Tensor(0.0, probs.dtype))
    fraction = ops.stop_gradient(counts.mean(axis=0))
    return factor * experts * (fraction * probs.mean(axis=0)).sum()


def locality_loss(probs: Tensor, target: Tensor, has_local: Tensor, factor: float) -> Tensor:
    """mu * mean_g has_local_g * KL(P_g || D_g), P_g the mean router probabilities of token group g.

    probs: [tokens, experts], tokens ordered by group; target: [groups, experts]; has_local: [groups].
    """
    groups, experts = target.shape
    mean_probs = probs.reshape(groups, -1, experts).mean(axis=1)
    kl = (mean_probs * (ops.log(mean_probs + 1e-9) - ops.log(target))).sum(axis=1)
    return factor * (kl * has_local).mean()
