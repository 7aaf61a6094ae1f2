"""The full PanGu-Sigma-style model: GRAPH and PYNATIVE agree, and one optimizer step lowers the loss per router."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from locmoe_ms.config import ROUTER_GATES
from locmoe_ms.model.network import build_model
from locmoe_ms.train.optim import build_optimizer
from locmoe_ms.train.step import TrainStep
from tests.conftest import small_config


def _batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.model.seq_length + 1)).astype(np.int32)
    return Tensor(tokens), Tensor(np.zeros(cfg.train.batch_size, np.int32))


def _losses_after_steps(cfg, steps):
    ms.set_seed(0)
    net = build_model(cfg)
    step = TrainStep(net, build_optimizer(net.trainable_params(), cfg.train), cfg.train)
    batch = _batch(cfg)
    return [float(step(*batch)[0]) for _ in range(steps)]


def test_graph_and_pynative_give_the_same_losses():
    cfg = small_config("locmoe", model={"num_layers": 3, "sparse_layers": [0, 2]})
    graph = _losses_after_steps(cfg, 3)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        pynative = _losses_after_steps(cfg, 3)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    np.testing.assert_allclose(graph, pynative, rtol=0, atol=1e-5)


@pytest.mark.parametrize("router", sorted(ROUTER_GATES))
def test_one_step_lowers_the_loss_on_a_fixed_batch(router):
    cfg = small_config(router, train={"learning_rate": 3e-3, "warmup_steps": 0})
    before, after = _losses_after_steps(cfg, 2)
    assert after < before - 1e-3, (before, after)


def test_outputs_report_losses_and_routing_statistics():
    cfg = small_config("locmoe", model={"num_layers": 3, "sparse_layers": [0, 2]})
    net = build_model(cfg)
    loss, lm, aux, loc, load, dropped, local, traffic = net(*_batch(cfg))
    assert float(loss) == pytest.approx(float(lm) + float(aux) + float(loc), rel=1e-6)
    tokens = cfg.train.batch_size * cfg.model.seq_length
    assert load.shape == (2, 4) and load.asnumpy().sum(1).tolist() == [tokens, tokens]
    assert dropped.shape == (2,) and ((dropped.asnumpy() >= 0) & (dropped.asnumpy() <= 1)).all()
    assert local.shape == (2,) and ((local.asnumpy() >= 0) & (local.asnumpy() <= 1)).all()
    assert float(aux) > 0 and float(loc) > 0


def test_outputs_depend_on_past_tokens_only():
    cfg = small_config("hash")  # hash routing depends on each token alone, so only attention can carry context
    net = build_model(cfg).network
    tokens, domains = _batch(cfg)
    ids = tokens.asnumpy()[:, :-1]
    base = net(Tensor(ids), domains)[0].asnumpy().reshape(ids.shape[0], ids.shape[1], -1)
    changed = ids.copy()
    changed[:, 7] = (changed[:, 7] + 1) % cfg.model.vocab_size
    out = net(Tensor(changed), domains)[0].asnumpy().reshape(ids.shape[0], ids.shape[1], -1)
    change = np.abs(out - base).max(axis=(0, 2))
    assert (change[:7] == 0).all(), "a position saw a future token"
    assert (change[8:] > 1e-4).all(), "later positions must read token 7 through attention"


def test_linear_bias_gradient_equals_the_sum_over_tokens():
    """Linear's bias gradient is computed as a product with ones (custom backward); it must equal the plain sum."""
    from locmoe_ms.model.layers import Linear
    rng = np.random.default_rng(5)
    layer = Linear(6, 4, 0.5)
    x = rng.normal(0, 1, (3, 5, 6)).astype(np.float32)
    upstream = rng.normal(0, 1, (3, 5, 4)).astype(np.float32)

    def objective(v):
        return (layer(v) * Tensor(upstream)).sum()

    grad_x, (grad_w, grad_b) = ms.grad(objective, grad_position=0, weights=layer.trainable_params())(Tensor(x))
    np.testing.assert_allclose(grad_b.asnumpy(), upstream.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_w.asnumpy(), x.reshape(-1, 6).T @ upstream.reshape(-1, 4), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_x.asnumpy(), upstream @ layer.weight.asnumpy().T, rtol=1e-5, atol=1e-5)


def test_recompute_gives_the_same_loss_and_gradients():
    """model.recompute marks every block with Cell.recompute(): the backward pass recomputes activations instead of
    keeping them, which must not change the loss or any gradient."""
    grads = {}
    for recompute in (False, True):
        cfg = small_config("locmoe", model={"num_layers": 3, "sparse_layers": [0, 2], "recompute": recompute})
        ms.set_seed(0)
        net = build_model(cfg)
        blocks = [*net.network.blocks, net.network.query_layer]
        assert all(("output_recompute" in b.get_flags()) == recompute for b in blocks)  # Cell.recompute() applied
        params = net.trainable_params()
        (loss, *_), g = ms.value_and_grad(net, None, params, has_aux=True)(*_batch(cfg))
        grads[recompute] = (float(loss), {p.name: x.asnumpy() for p, x in zip(params, g)})
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-6)
    assert grads[True][1].keys() == grads[False][1].keys()
    for name, value in grads[False][1].items():
        np.testing.assert_allclose(grads[True][1][name], value, rtol=1e-5, atol=1e-7, err_msg=name)
