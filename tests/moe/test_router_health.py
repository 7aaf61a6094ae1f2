"""The router health options (moe_config.grap_relu, z_loss_factor, router_jitter, bias_balance_rate) against NumPy."""
import numpy as np
import pytest
from mindspore import Tensor

from locmoe_ms.moe.gates import GrAPGate
from locmoe_ms.moe.routers import build_router
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology
from tests.conftest import small_config
from tests.reference import grap_weight_reference

TOKENS, HIDDEN, EXPERTS = 64, 32, 4


def _router(**moe):
    cfg = small_config("locmoe", moe_config={"locality_loss_factor": 0.0, **moe})
    return build_router(cfg, Placement(Topology.from_config(cfg)), TOKENS)


def _inputs(seed=0, positive=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (TOKENS, HIDDEN)).astype(np.float32)
    if positive:
        x = np.abs(x) + 0.1
    return Tensor(x), Tensor(rng.integers(0, 200, TOKENS).astype(np.int32)), Tensor(np.zeros(TOKENS, np.int32))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_grap_gate_without_relu_is_the_affine_map():
    gate = GrAPGate(HIDDEN, EXPERTS, relu=False)
    gate.bias.set_data(Tensor(np.array([0.5, -1.0, 0.0, 2.0], np.float32)))
    x = np.random.default_rng(1).normal(0, 1, (TOKENS, HIDDEN)).astype(np.float32)
    logits, _ = gate(Tensor(x))
    expected = x @ grap_weight_reference(EXPERTS, HIDDEN).T + np.array([0.5, -1.0, 0.0, 2.0])
    assert (expected < 0).any()  # negative logits survive: no ReLU
    np.testing.assert_allclose(logits.asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_z_loss_is_added_to_the_auxiliary_loss_as_numpy_computes_it():
    x, ids, domains = _inputs()
    plain = _router(grap_relu=False)
    with_z = _router(grap_relu=False, z_loss_factor=0.001)
    aux_plain = float(plain(x, ids, domains)[3].asnumpy())
    aux_z = float(with_z(x, ids, domains)[3].asnumpy())
    logits = x.asnumpy().astype(np.float64) @ grap_weight_reference(EXPERTS, HIDDEN).T
    lse = np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(aux_z - aux_plain, 0.001 * np.mean(lse ** 2), rtol=1e-4)


def test_jitter_scales_the_router_input_in_training_only():
    x, ids, domains = _inputs(positive=True)
    router = _router(grap_relu=False, router_jitter=0.2)
    exact = x.asnumpy() @ grap_weight_reference(EXPERTS, HIDDEN).T  # bias 0; x > 0 so every row of W x is > 0
    router.set_train(False)
    np.testing.assert_allclose(router(x, ids, domains)[2].asnumpy(), _softmax(exact), rtol=1e-5)
    router.set_train(True)
    probs = router(x, ids, domains)[2].asnumpy()
    logits = np.log(probs) - np.log(probs).mean(axis=1, keepdims=True)  # softmax inverted up to a row constant
    assert not np.allclose(probs, _softmax(exact), rtol=1e-3)
    # each logit is a sum of inputs scaled by factors in [0.8, 1.2]: within those factors of W x, up to the constant
    spread = logits - (exact - exact.mean(axis=1, keepdims=True))
    assert np.abs(spread).max() <= 0.4 * exact.max() + 1e-5


@pytest.mark.parametrize("rate", [0.01, 0.25])
def test_bias_balancing_moves_toward_underloaded_experts_by_the_sign_rule(rate):
    x, ids, domains = _inputs(seed=2)
    router = _router(bias_balance_rate=rate)
    router.set_train(True)
    biases = [np.zeros(EXPERTS)]
    for _ in range(3):
        pre = x.asnumpy() @ grap_weight_reference(EXPERTS, HIDDEN).T
        key = _softmax(np.maximum(pre, 0.0)) + biases[-1]
        index = router(x, ids, domains)[0].asnumpy()
        # the choice is top-1 of probs + bias (the bias before this step's update), ties to the larger pre-activation
        tied = key >= key.max(axis=1, keepdims=True) - 1e-7
        np.testing.assert_array_equal(index, np.argmax(np.where(tied, pre, -np.inf), axis=1))
        load = np.bincount(index, minlength=EXPERTS)
        biases.append(biases[-1] + rate * np.sign(load.mean() - load))
        np.testing.assert_allclose(router.balance_bias.asnumpy(), biases[-1], atol=1e-6)
    router.set_train(False)
    router(x, ids, domains)
    np.testing.assert_allclose(router.balance_bias.asnumpy(), biases[-1], atol=1e-6)  # evaluation leaves it
    assert not np.allclose(biases[-1], 0.0)


def test_bias_balancing_score_is_the_unbiased_probability():
    x, ids, domains = _inputs(seed=3)
    router = _router(bias_balance_rate=0.5)
    router.balance_bias.set_data(Tensor(np.array([0.0, 0.0, 0.0, 5.0], np.float32)))
    router.set_train(False)
    index, score, probs = (t.asnumpy() for t in router(x, ids, domains)[:3])
    assert (index == 3).all()  # the bias decides the choice
    np.testing.assert_allclose(score, probs[:, 3], rtol=1e-6)  # but not the gate value
