"""GrAP gate: the paper's fixed orthogonal weights, applied without a dense matmul."""
import numpy as np
import pytest
from mindspore import Tensor

from locmoe_ms.moe.gates import DenseGate, GrAPGate, grap_weight
from tests.reference import grap_weight_reference


@pytest.mark.parametrize("experts,hidden", [(8, 512), (8, 100), (16, 5120), (3, 10), (7, 7)])
def test_grap_weight_matches_definition_and_is_orthogonal(experts, hidden):
    w = grap_weight(experts, hidden)
    np.testing.assert_allclose(w, grap_weight_reference(experts, hidden), rtol=0, atol=1e-7)
    gram = w @ w.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=0)
    assert (np.count_nonzero(w, axis=0) == 1).all(), "every feature belongs to exactly one block"


@pytest.mark.parametrize("experts,hidden", [(8, 64), (8, 60), (4, 30)])
def test_grap_gate_equals_numpy(experts, hidden):
    rng = np.random.default_rng(0)
    gate = GrAPGate(hidden, experts)
    bias = rng.normal(0, 0.1, experts).astype(np.float32)
    gate.bias.set_data(Tensor(bias))
    x = rng.normal(0, 1, (33, hidden)).astype(np.float32)
    expected = np.maximum(x @ grap_weight_reference(experts, hidden).T + bias, 0)
    np.testing.assert_allclose(gate(Tensor(x))[0].asnumpy(), expected, atol=1e-5)


def test_grap_rejects_fewer_features_than_experts():
    with pytest.raises(ValueError, match="hidden"):
        grap_weight(8, 4)


def test_switch_gate_is_a_bias_free_linear_map():
    """Switch Transformer's router logits are W_r x: one [h, n] weight, no bias (the paper's definition)."""
    gate = DenseGate(16, 4, 0.5)
    assert [p.name for p in gate.get_parameters()] == ["weight"]
    x = np.random.default_rng(1).normal(0, 1, (9, 16)).astype(np.float32)
    logits, order = gate(Tensor(x))
    np.testing.assert_allclose(logits.asnumpy(), x @ gate.weight.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(order.asnumpy(), logits.asnumpy())
