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
    """Load, dropped share and local share of a fixed (hash) routing equal a count by hand: token group g holds
    batch rows g*B/G.., fills ceil(t * 1.25 / E) slots per expert in token order; expert e sits on rank e, node
    e // 2, and group g on node g // 2 (2 nodes x 2 devices)."""
    from locmoe_ms.moe.routers import balanced_table
    cfg = small_config("hash", model={"num_layers": 3, "sparse_layers": [0, 2]})
    net = build_model(cfg)
    tokens, domains = _batch(cfg)
    loss, lm, aux, loc, load, dropped, local, traffic = net(tokens, domains)
    assert float(loss) == pytest.approx(float(lm), rel=1e-6) and float(aux) == 0 and float(loc) == 0
    experts = balanced_table(cfg.model.vocab_size, 4, cfg.moe_config.hash_seed)[tokens.asnumpy()[:, :-1].ravel()]
    groups, per_group = 4, experts.size // 4
    capacity = int(np.ceil(per_group * 1.25 / 4))
    kept = local_hits = 0
    for g in range(groups):
        mine = experts[g * per_group:(g + 1) * per_group]
        kept += sum(min(int((mine == e).sum()), capacity) for e in range(4))
        local_hits += int((mine // 2 == g // 2).sum())
    per_group_counts = [np.bincount(experts[g * per_group:(g + 1) * per_group], minlength=4).tolist()
                        for g in range(groups)]
    assert load.asnumpy().tolist() == [per_group_counts] * 2                    # [layers, token groups, experts]
    np.testing.assert_allclose(dropped.asnumpy(), [1 - kept / experts.size] * 2, rtol=1e-6)
    np.testing.assert_allclose(local.asnumpy(), [local_hits / experts.size] * 2, rtol=1e-6)
    assert 0 < 1 - kept / experts.size < 0.5, "the batch should drop some tokens, or the count tests nothing"
    assert traffic.asnumpy().tolist() == [[0, 0, 0]] * 2


def test_learned_router_losses_are_reported():
    cfg = small_config("locmoe", model={"num_layers": 3, "sparse_layers": [0, 2]})
    loss, lm, aux, loc, *_ = build_model(cfg)(*_batch(cfg))
    assert float(loss) == pytest.approx(float(lm) + float(aux) + float(loc), rel=1e-6)
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
    from locmoe_ms.layers import Linear
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
