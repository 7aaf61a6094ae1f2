"""Capacity: slots filled in token order per token group, overflow dropped exactly."""
import numpy as np
import pytest
from mindspore import Tensor, nn

from locmoe_ms.capacity import expert_capacity
from locmoe_ms.moe.dispatch import Dispatcher


def test_capacity_formula():
    assert expert_capacity(2048, 1.25, 1, 8) == 320
    assert expert_capacity(100, 1.0, 2, 8) == 7  # ceil(100 / 16)
    assert expert_capacity(10, 0.1, 1, 8, min_capacity=4) == 4


@pytest.mark.parametrize("per_group", [False, True], ids=["scatter", "per_group"])
def test_drops_exactly_the_tokens_past_capacity(per_group):
    # 2 token groups x 6 tokens, 3 experts, capacity 2
    index = np.array([0, 0, 0, 1, 2, 0,   1, 1, 1, 1, 2, 2], dtype=np.int32)
    d = Dispatcher(experts=3, groups=2, capacity=2, per_group=per_group)
    slot, kept, load = d.assign(Tensor(index))
    expected_kept = [1, 1, 0, 1, 1, 0,   1, 1, 0, 0, 1, 1]
    assert kept.asnumpy().tolist() == expected_kept
    assert load.asnumpy().tolist() == [[4, 1, 1], [0, 4, 2]]  # per token group
    # slot = e*(G*C) + g*C + position
    expected_slot = [0, 1, 12, 4, 8, 12,   6, 7, 12, 12, 10, 11]
    assert slot.asnumpy().tolist() == expected_slot

    x = np.arange(12, dtype=np.float32).reshape(12, 1) + 1
    buf = d.dispatch(Tensor(x), slot).asnumpy()
    assert buf.shape == (3, 4, 1)
    assert buf[:, :, 0].tolist() == [[1, 2, 0, 0], [4, 0, 7, 8], [5, 0, 11, 12]]
    out = d.combine(Tensor(buf * 10), slot, Tensor(np.full(12, 0.5, np.float32))).asnumpy()[:, 0]
    np.testing.assert_allclose(out, 5 * x[:, 0] * np.array(expected_kept))


class _SumOfOutput(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, x, ids):
        return self.layer(x, ids, ids)[0].sum()


def test_auto_mode_layout_pins_pass_values_unchanged():
    """In auto mode the MoE layer routes its buffer through GroupwiseLayouts (identity slices that only carry shard
    strategies); on CPU the layer's outputs and gradients equal those of the explicit-mode layer."""
    import mindspore as ms
    from locmoe_ms.moe.layer import MoELayer
    from locmoe_ms.parallel.placement import Placement
    from locmoe_ms.parallel.topology import Topology
    from tests.conftest import small_config

    tokens, rng = 64, np.random.default_rng(3)
    layers = []
    for mode in ("explicit", "auto"):
        cfg = small_config(parallel_config={"devices_per_node": 4, "model_parallel": 2, "exchange": "groupwise",
                                            "mode": mode}, moe_config={"min_capacity": 8})
        layers.append(MoELayer(cfg, Placement(Topology.from_config(cfg)), tokens))
    explicit, auto = layers
    assert explicit.layouts is None and auto.layouts is not None
    for p, q in zip(explicit.trainable_params(), auto.trainable_params()):
        q.set_data(Tensor(p.asnumpy()))
    x = Tensor(rng.normal(0, 1, (tokens, 32)).astype(np.float32))
    ids = Tensor(np.arange(tokens, dtype=np.int32))
    outputs = [layer(x, ids, ids) for layer in layers]
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    grads = [ms.grad(_SumOfOutput(layer))(x, ids).asnumpy() for layer in layers]
    np.testing.assert_array_equal(grads[0], grads[1])
    assert np.abs(grads[0]).sum() > 0
