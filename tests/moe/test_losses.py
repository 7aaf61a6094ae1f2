"""Auxiliary and locality losses against closed forms."""
import numpy as np
import pytest
from mindspore import Tensor

from locmoe_ms.moe.losses import auxiliary_loss, expert_load, locality_loss
from locmoe_ms.parallel.topology import Topology

ALPHA = 0.01


def test_aux_loss_equals_alpha_for_uniform_routing():
    experts, tokens = 8, 64
    probs = np.full((tokens, experts), 1.0 / experts, np.float32)
    index = np.arange(tokens, dtype=np.int32) % experts
    value = float(auxiliary_loss(Tensor(probs), expert_load(Tensor(index), experts), ALPHA))
    assert value == pytest.approx(ALPHA, rel=1e-6)


def test_aux_loss_exceeds_alpha_for_skewed_routing():
    experts, tokens = 8, 64
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (tokens, experts))
    logits[:, 0] += 3.0
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    index = probs.argmax(1).astype(np.int32)
    value = float(auxiliary_loss(Tensor(probs), expert_load(Tensor(index), experts), ALPHA))
    f = np.bincount(index, minlength=experts) / tokens
    assert value == pytest.approx(ALPHA * experts * (f * probs.mean(0)).sum(), rel=1e-5)
    assert value > 2 * ALPHA


def _locality_reference(probs, local_mask, eps, mu):
    groups, experts = local_mask.shape
    total = 0.0
    for g, p in enumerate(probs.reshape(groups, -1, experts).mean(1)):
        k = local_mask[g].sum()
        if k == 0:
            continue
        d = (1 - eps) * local_mask[g] / k + eps / experts
        total += (p * np.log(p / d)).sum()
    return mu * total / groups


def test_locality_loss_equals_closed_form():
    topo = Topology(nodes=2, devices_per_node=2, expert_num=8, expert_parallel=4)
    target, has_local = topo.locality_target(0.01)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(8), size=32).astype(np.float32)
    value = float(locality_loss(Tensor(probs), Tensor(target), Tensor(has_local), 0.5))
    expected = _locality_reference(probs.astype(np.float64), topo.group_local_mask(), 0.01, 0.5)
    assert value == pytest.approx(expected, rel=1e-5)
    assert topo.group_local_mask().tolist() == [[True] * 4 + [False] * 4] * 2 + [[False] * 4 + [True] * 4] * 2


def test_locality_loss_is_zero_for_groups_whose_node_holds_no_expert():
    # 2 experts, both on node 0 (ranks 0 and 1); node 1's groups have no local expert.
    topo = Topology(nodes=2, devices_per_node=2, expert_num=2, placement=((0,), (1,)))
    target, has_local = topo.locality_target(0.01)
    assert has_local.tolist() == [1.0, 1.0, 0.0, 0.0]
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(2, 0.2), size=16).astype(np.float32)
    probs[:8, 0] += 1.0
    probs /= probs.sum(1, keepdims=True)
    only_far = probs.copy()
    only_far[:8] = 0.5  # groups 0 and 1 match their target exactly; groups 2 and 3 (no local expert) are skewed
    far_value = float(locality_loss(Tensor(only_far), Tensor(target), Tensor(has_local), 1.0))
    assert far_value == pytest.approx(0.0, abs=1e-6), "groups on an expert-less node must contribute nothing"
    value = float(locality_loss(Tensor(probs), Tensor(target), Tensor(has_local), 1.0))
    assert value == pytest.approx(_locality_reference(probs.astype(np.float64), topo.group_local_mask(), 0.01, 1.0),
                                  rel=1e-5)
