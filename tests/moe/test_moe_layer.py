"""The MoE layer equals a per-token NumPy loop over experts (forward and gradients) when nothing is dropped."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from locmoe_ms.moe.layer import MoELayer
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology
from tests.conftest import small_config
from tests.reference import moe_per_token

TOKENS = 64


def _layer_with_random_weights(router: str, hidden: int, rng):
    cfg = small_config(router, model={"hidden_size": hidden}, moe_config={"min_capacity": TOKENS})
    layer = MoELayer(cfg, Placement(Topology.from_config(cfg)), TOKENS)
    experts = layer.experts
    for p in (experts.w_in, experts.b_in, experts.w_out, experts.b_out, *_gate_bias(layer)):
        p.set_data(Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    if router == "switch":
        gate_w = rng.normal(0, 0.3, layer.router.gate.weight.shape).astype(np.float32)
        layer.router.gate.weight.set_data(Tensor(gate_w))
        gate_w = gate_w.T
    else:
        gate_w = layer.router.gate.weight.asnumpy()
    return layer, gate_w


def _gate_bias(layer) -> list:
    """GrAP's learnable bias; Switch's gate has none."""
    return [layer.router.gate.bias] if hasattr(layer.router.gate, "bias") else []


@pytest.mark.parametrize("router,hidden", [("locmoe", 32), ("locmoe", 30), ("switch", 32)])
def test_layer_equals_per_token_loop(router, hidden):
    rng = np.random.default_rng(7)
    layer, gate_w = _layer_with_random_weights(router, hidden, rng)
    assert layer.capacity >= TOKENS
    x = rng.normal(0, 1, (TOKENS, hidden)).astype(np.float32)
    upstream = rng.normal(0, 1, (TOKENS, hidden)).astype(np.float32)
    ids = Tensor(rng.integers(0, 200, TOKENS).astype(np.int32))
    domains = Tensor(np.zeros(TOKENS, np.int32))
    e = layer.experts
    params = [e.w_in, e.b_in, e.w_out, e.b_out, *_gate_bias(layer)]
    names = ["w_in", "b_in", "w_out", "b_out", "gate_b"][:len(params)]
    if router == "switch":
        params.append(layer.router.gate.weight)
        names.append("gate_w")

    def objective(x_in):
        return (layer(x_in, ids, domains)[0] * Tensor(upstream)).sum()

    (grad_x, grad_params) = ms.grad(objective, grad_position=0, weights=params)(Tensor(x))
    y = layer(Tensor(x), ids, domains)[0].asnumpy()

    gate_b = _gate_bias(layer)[0].asnumpy() if _gate_bias(layer) else np.zeros(gate_w.shape[0])
    y_ref, ref = moe_per_token(x.astype(np.float64), gate_w.astype(np.float64), gate_b.astype(np.float64), *[
        p.asnumpy().astype(np.float64) for p in (e.w_in, e.b_in, e.w_out, e.b_out)],
        relu_gate=(router == "locmoe"), upstream=upstream.astype(np.float64))
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(grad_x.asnumpy(), ref["x"], atol=1e-5, rtol=1e-5)
    for name, grad in zip(names, grad_params):
        expected = ref[name].T if name == "gate_w" else ref[name]
        np.testing.assert_allclose(grad.asnumpy(), expected, atol=1e-5, rtol=1e-5, err_msg=name)
