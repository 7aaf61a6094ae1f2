"""Router interface, and the fixed routers' determinism and balance."""
import numpy as np
import pytest
from mindspore import Tensor

from locmoe_ms.config import ROUTER_GATES
from locmoe_ms.moe.routers import build_router
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology
from tests.conftest import small_config


@pytest.mark.parametrize("router", sorted(ROUTER_GATES))
def test_every_router_returns_the_same_structure(router):
    cfg = small_config(router)
    r = build_router(cfg, Placement(Topology.from_config(cfg)), 16)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(0, 1, (16, 32)).astype(np.float32))
    ids = Tensor(rng.integers(0, 200, 16).astype(np.int32))
    index, score, probs, aux, loc = r(x, ids, Tensor(np.zeros(16, np.int32)))
    assert index.shape == (16,) and score.shape == (16,) and probs.shape == (16, 4)
    assert aux.shape == () and loc.shape == ()
    np.testing.assert_allclose(probs.asnumpy().sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(score.asnumpy(), probs.asnumpy()[np.arange(16), index.asnumpy()], atol=1e-7)


@pytest.mark.parametrize("router", ["hash", "rre"])
def test_fixed_routers_are_deterministic(router):
    ids = np.random.default_rng(3).integers(0, 200, 64).astype(np.int32)
    runs = []
    for _ in range(2):
        cfg = small_config(router)
        r = build_router(cfg, Placement(Topology.from_config(cfg)), 64)
        runs.append(r(Tensor(np.zeros((64, 32), np.float32)), Tensor(ids), Tensor(np.zeros(64, np.int32)))[0]
                    .asnumpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    # same token id -> same expert
    for token in np.unique(ids):
        assert len(set(runs[0][ids == token])) == 1


def test_hash_is_balanced_within_one_token_on_uniform_ids():
    cfg = small_config("hash", model={"vocab_size": 1003}, moe_config={"expert_num": 8},
                       parallel_config={"expert_parallel": 4})
    r = build_router(cfg, Placement(Topology.from_config(cfg)), 1003)
    ids = np.arange(1003, dtype=np.int32)
    index = r(Tensor(np.zeros((1003, 32), np.float32)), Tensor(ids), Tensor(np.zeros(1003, np.int32)))[0].asnumpy()
    counts = np.bincount(index, minlength=8)
    assert counts.max() - counts.min() <= 1, counts


def test_rre_routes_each_domain_to_its_expert_group_balanced_inside_it():
    cfg = small_config("rre", moe_config={"expert_num": 6, "rre_groups": 2, "rre_group_by": "domain"},
                       parallel_config={"expert_parallel": 2})
    r = build_router(cfg, Placement(Topology.from_config(cfg)), 400)
    ids = np.tile(np.arange(200, dtype=np.int32), 2)  # the whole vocabulary, once per domain
    domains = np.repeat(np.array([0, 1], np.int32), 200)
    index = r(Tensor(np.zeros((400, 32), np.float32)), Tensor(ids), Tensor(domains))[0].asnumpy()
    for group, experts in ((0, [0, 1, 2]), (1, [3, 4, 5])):
        counts = np.bincount(index[group * 200:(group + 1) * 200], minlength=6)
        assert counts[[e for e in range(6) if e not in experts]].sum() == 0, counts  # level 1: the domain's group
        assert counts[experts].max() - counts[experts].min() <= 1, counts            # level 2: 67/67/66


def test_rre_token_groups_are_balanced_inside_each_group():
    """Level 1 by token hash: each group's level-2 table is balanced over exactly the ids that reach the group
    (one table balanced over the whole vocabulary is balanced inside a group only on average)."""
    cfg = small_config("rre", model={"vocab_size": 1001}, moe_config={"expert_num": 8, "rre_groups": 2},
                       parallel_config={"expert_parallel": 4})
    r = build_router(cfg, Placement(Topology.from_config(cfg)), 1001)
    ids = np.arange(1001, dtype=np.int32)
    index = r(Tensor(np.zeros((1001, 32), np.float32)), Tensor(ids), Tensor(np.zeros(1001, np.int32)))[0].asnumpy()
    groups = index // 4
    assert abs(int((groups == 0).sum()) - int((groups == 1).sum())) <= 1
    for group in (0, 1):
        counts = np.bincount(index[groups == group] - 4 * group, minlength=4)
        assert counts.max() - counts.min() <= 1, (group, counts)


def test_grap_ties_go_to_the_largest_pre_activation_not_to_expert_0():
    """When every GrAP pre-activation is negative the ReLU makes all logits 0; a plain argmax would send all such
    tokens to expert 0 (and a dead gate never recovers). The tie is broken by the pre-activation instead."""
    cfg = small_config("locmoe", moe_config={"aux_loss_factor": 0.0, "locality_loss_factor": 0.0})
    r = build_router(cfg, Placement(Topology.from_config(cfg)), 4)
    r.gate.bias.set_data(Tensor(np.full(4, -10.0, np.float32)))   # every pre-activation < 0: all logits tie at 0
    x = np.zeros((4, 32), np.float32)
    for token, expert in enumerate([2, 0, 3, 1]):
        x[token, expert * 8:(expert + 1) * 8] = 1.0                 # raises the pre-activation of one expert group
    index, score, probs, _, _ = r(Tensor(x), Tensor(np.zeros(4, np.int32)), Tensor(np.zeros(4, np.int32)))
    assert index.asnumpy().tolist() == [2, 0, 3, 1]
    np.testing.assert_allclose(score.asnumpy(), 0.25, rtol=1e-6)
